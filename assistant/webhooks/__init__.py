"""Signed webhooks: a tenant's subscriptions (URL, events, secret), one delivery per matching
subscription for each published event, sent by a worker in every server process from a durable
queue (``ports.webhooks``), retried with backoff, each attempt logged.

    events.py    the event names           models.py   Subscription, Delivery, Attempt
    signing.py   sign() and verify()       urls.py     which URLs may be called (SSRF)
    service.py   Webhooks: publish, subscriptions, the log    worker.py   DeliveryWorker
"""
