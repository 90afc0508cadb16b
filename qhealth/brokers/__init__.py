"""Reading queues where they live: Redis lists and streams, RQ, arq and Celery's brokers.

Each module here reads one kind of queue into a :class:`~qhealth.Reading`, at a
bounded cost to the broker (never a scan: the head item only, counts Redis
keeps itself, pipelined in one or two round trips per tick). Two parts of
qhealth use them: the sidecar (``qhealth watch``, :mod:`qhealth.sidecar`),
which watches queues from outside, and the framework integrations
(:mod:`qhealth.integrations`), which read the depth of the queue their workers
consume. Neither imports the other; both import this.
"""
