from django.http import HttpRequest, JsonResponse
from shop.models import Order
from shop.tasks import write_receipt


def place_order(request: HttpRequest) -> JsonResponse:
    """Writes the order and sends its receipt task once the request's transaction commits; a request with
    ``fail`` raises after both, so the transaction rolls back (ATOMIC_REQUESTS) and nothing is sent."""
    order = Order.objects.create(item=request.POST["item"])
    write_receipt.delay_on_commit(order.pk)
    if request.POST.get("fail"):
        raise RuntimeError("payment refused")
    return JsonResponse({"order": order.pk})
