"""Background work: the job queue (Dramatiq over Redis), the outbox relay that feeds it, and
the jobs themselves (email, the deletion cleanup). See docs/background-work.md."""
