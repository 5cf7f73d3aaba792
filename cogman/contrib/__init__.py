"""Integrations with web frameworks: ``cogman.contrib.django`` (a ``django.tasks`` backend, an app configured
from Django settings, ``delay_on_commit``).

Each subpackage imports its framework and may import anything of cogman; nothing in cogman imports this
package, so ``import cogman`` never imports a framework, and a framework is needed only by whoever imports
its subpackage.
"""
