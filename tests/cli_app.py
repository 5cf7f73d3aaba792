"""An app for the CLI tests: ``cogman -A tests.cli_app worker``."""

from cogman import App

app = App("cli", broker="memory://", backend="memory://")
not_an_app = 42


@app.task(name="cli.echo")
def echo(value):
    return value
