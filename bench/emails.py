"""The email the bench sends: a transactional email of common shape (text and HTML, one recipient, a tag)."""

from __future__ import annotations

from typing import Any

TEXT = (
    "Hello Alice,\n\nGood news: your order {order} has shipped and is on its way. It should arrive within "
    "two to four working days.\n\nCarrier: Example Parcel\nTracking number: EP{order}0042US\n\n"
    "Items:\n  1 x Stoneware mug, blue glaze ........ 18.00\n  2 x Linen napkin, natural ............ 24.00\n"
    "  Shipping ................................ 4.90\n  Total ................................. 46.90\n\n"
    "You can follow the parcel at https://shop.example.com/orders/{order}/tracking and change the delivery "
    "address there until it leaves the regional hub.\n\nQuestions? Reply to this email or visit "
    "https://shop.example.com/help.\n\nThe Example Shop team\n"
)
HTML = (
    "<!doctype html><html><head><meta charset='utf-8'><title>Your order has shipped</title></head>"
    "<body style='margin:0;padding:0;background:#f4f4f5;font-family:Helvetica,Arial,sans-serif;color:#18181b'>"
    "<table role='presentation' width='100%' cellpadding='0' cellspacing='0'><tr><td align='center'>"
    "<table role='presentation' width='600' cellpadding='24' cellspacing='0' style='background:#ffffff'>"
    "<tr><td><h1 style='font-size:22px;margin:0 0 16px'>Your order {order} has shipped</h1>"
    "<p style='font-size:15px;line-height:22px'>Hello Alice,</p><p style='font-size:15px;line-height:22px'>"
    "Good news: your order is on its way. It should arrive within two to four working days.</p>"
    "<table role='presentation' width='100%' cellpadding='6' cellspacing='0' style='font-size:14px;"
    "border-top:1px solid #e4e4e7;border-bottom:1px solid #e4e4e7'>"
    "<tr><td>1 &times; Stoneware mug, blue glaze</td><td align='right'>18.00</td></tr>"
    "<tr><td>2 &times; Linen napkin, natural</td><td align='right'>24.00</td></tr>"
    "<tr><td>Shipping</td><td align='right'>4.90</td></tr>"
    "<tr><td><strong>Total</strong></td><td align='right'><strong>46.90</strong></td></tr></table>"
    "<p style='font-size:15px;line-height:22px'>Carrier: Example Parcel<br>Tracking number: EP{order}0042US</p>"
    "<p><a href='https://shop.example.com/orders/{order}/tracking' style='display:inline-block;"
    "background:#2563eb;color:#ffffff;padding:12px 20px;border-radius:6px;text-decoration:none'>"
    "Track your parcel</a></p><p style='font-size:13px;line-height:20px;color:#52525b'>You can change the "
    "delivery address until the parcel leaves the regional hub. Questions? Reply to this email or visit "
    "<a href='https://shop.example.com/help'>our help pages</a>.</p>"
    "<p style='font-size:13px;color:#52525b'>The Example Shop team</p></td></tr></table>"
    "</td></tr></table></body></html>"
)


def typical_email(index: int, **overrides: Any) -> dict[str, Any]:
    """A transactional email of common shape: text and HTML (about 3.4 KB together), one recipient, a tag."""
    order = f"{100000 + index}"
    email: dict[str, Any] = {
        "from": "Example Shop <orders@example.com>",
        "to": [f"Alice Example <alice{index}@example.org>"],
        "subject": f"Your order {order} has shipped",
        "text": TEXT.format(order=order),
        "html": HTML.format(order=order),
        "tags": [{"name": "kind", "value": "shipping"}],
        "metadata": {"order_id": order},
    }
    email.update(overrides)
    return email


BENCH_TEMPLATE = "bench-shipping"


def typical_template() -> dict[str, str]:
    """The typical email as a stored template: the order number is its one variable."""
    marker = "\x00order\x00"
    return {
        "subject": "Your order {{ order }} has shipped",
        "text": TEXT.format(order=marker).replace(marker, "{{ order }}"),
        "html": HTML.format(order=marker).replace(marker, "{{ order }}"),
    }


def templated_email(index: int, **overrides: Any) -> dict[str, Any]:
    """The typical email rendered from :func:`typical_template`: the same message, sent as a template and data."""
    email = typical_email(index, **overrides)
    order = email["metadata"]["order_id"]
    for part in ("subject", "text", "html"):
        del email[part]
    return {**email, "template": BENCH_TEMPLATE, "data": {"order": order}}
