"""What one email may hold: the API refuses more (mailqueue.models), the sender checks what it reads against them.

Plain constants in a module of their own, so that the functions that only read them (the sender)
do not import pydantic with the models.
"""

MAX_RECIPIENTS = 50
MAX_SUBJECT = 998
MAX_BODY_CHARS = 1_000_000
# Attachments, inline and uploaded, in all. Inline ones travel in the request, which can carry at most
# about 6 MB (see mailqueue.web: a third of it base64); larger ones go through POST /attachments.
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
# What SES (API v2) sends: a raw message of at most 40 MB, attachments included. The largest email the
# API takes renders well under it (tests/unit/test_models.py checks the sum).
SES_MAX_MESSAGE_BYTES = 40_000_000
MAX_ATTACHMENTS = 20
MAX_HEADERS = 20
MAX_TAGS = 10
MAX_METADATA_BYTES = 256
# DynamoDB refuses maps nested deeper than 32 levels, counting the item's own; well inside that.
MAX_METADATA_DEPTH = 16
