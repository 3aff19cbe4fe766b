"""Delivery to the authorised body (Order No. 187, paragraph 29): records, client, ledger.

- :mod:`pipelines.deliver.records`: verified footprint -> delivered records and content hashes;
- :mod:`pipelines.deliver.authority`: the authority's API client (``pipelines/receiver/API.md``);
- :mod:`pipelines.deliver.ledger`: what was sent, answered and acknowledged (state database);
- :mod:`pipelines.deliver.stage`: ``deliver()``, one run; :mod:`pipelines.deliver.reconcile`:
  the drift report.
"""
