"""The wsharbor demo application: ``wsharbor run examples.demo.app:app`` (see ``app.py``)."""
