"""gevent plumbing, the only place that knows gevent's internals: socket helpers, supervised
greenlets, worker pools and fork bookkeeping."""
