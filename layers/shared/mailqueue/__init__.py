"""mailqueue: the domain package shared by every function (shipped as a Lambda layer).

Modules, by responsibility:
- ``settings``: configuration read once from the environment.
- ``models``: the email as callers send it (pydantic) and the records stored for it.
- ``statemachine``: statuses, legal transitions, deadlines; every status change goes through it.
- ``store``: all DynamoDB access. ``queue``: all SQS access. ``mailer``: all SES access.
- ``render``: the MIME message. ``ses_errors``: what an SES error means for the email.
- what the handlers call: ``service`` (the API), ``sender``, ``requeue``, ``ses_events`` (the events
  function), ``notifications`` (notify), ``webhooks``.
"""
