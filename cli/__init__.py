"""Entry points: the ``tracking`` command (:mod:`cli.main`), the demo and child processes.

Kept outside the layers so that :mod:`tracking` (the domain library) never
imports Celery, :mod:`celery_app` never imports :mod:`tasks`, and only this
package ties them together.
"""
