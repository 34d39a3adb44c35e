"""The Session Management web app: a client of the pipeline (reads its output topics and database,
publishes ordinary input events). See docs/web.md."""
