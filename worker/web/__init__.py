"""The review page (`labelfabric review serve`): Starlette over the same review actions the
CLI uses (`worker/reviews.py`), with its templates in `templates/`."""
