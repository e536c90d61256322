"""Examples: a FastAPI app, a Django view, and reward handlers (see requirements.txt)."""
