"""Found by cogman.contrib.django when Django starts (it is an installed app's tasks.py): cogman tasks
(``@app.task``) and Django's (``@task``), side by side."""

from shop.models import Order

from cogman.contrib.django import app
from cogman.contrib.django.tasks_api import task  # django.tasks' (Django 6), or the backport's (Django 5)


@app.task
def write_receipt(order_id: int) -> str:
    """Needs the order's row: run before its transaction commits, it would fail (Order.DoesNotExist)."""
    order = Order.objects.get(pk=order_id)
    order.receipt = f"receipt for {order.item}"
    order.save()
    return order.receipt


@task(priority=10)
def total(prices: list[float]) -> float:
    return sum(prices)


@task(priority=-50)
def out_of_stock(item: str) -> None:
    raise LookupError(f"no {item} left")


@task(takes_context=True)
def whoami(context, label: str) -> dict:
    return {"id": context.task_result.id, "attempt": context.attempt, "label": label}


@task
def count_orders() -> int:
    return Order.objects.count()


@task
async def add_later(a: int, b: int) -> int:
    return a + b


@app.task
def connection_was_closed() -> bool:
    """True when this worker thread's database connection was closed since its previous task, as it must
    be with CONN_MAX_AGE = 0 (Django's default)."""
    from django.db import connection

    closed = connection.connection is None
    Order.objects.exists()  # opens it
    return closed
