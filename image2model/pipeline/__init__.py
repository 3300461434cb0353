"""The pipeline: finding due generations, claiming them and running their steps on the pool.

Owns: dispatcher (the thread that claims due work and hands steps to the pool), claims (who holds
a generation, and its lease), held (steps that poll FAL without holding a pool thread between
polls), runs (what a step is given: `GenerationRun`, its verbs to finish, fail or run again),
slots (the bound on FAL steps and on local CPU work), lifecycle (creating, starting and stopping
the background work). May import: generators, files, store, pool, processes.

Glossary:
- job: what one upload (or one generate request) asked for; one or more files, one task id.
- task: the id of a job that clients poll (`task_id`); the old API's name for it.
- batch: the uploaded files of one upload request, kept under `uploads/{batch_id}/`.
- generation: one file turned into one model by one generator; a job has one per file.
- step: one piece of a generation's work run on the pool (a FAL submit, a poll, a download,
  or a whole local relief run); a generation takes steps until it is terminal.
- claim: a process's mark on a generation (`claimed_by`) while one of its steps runs.
- lease: how long a claim holds without renewal (`LEASE_SECONDS`); a dead owner's claims are
  released at once, another host's when the lease runs out.
- held step: a FAL generation between polls, kept claimed by this process in memory instead
  of writing its claim back to SQLite at every poll.
- release: giving a claim back (`claims.release`, `claims.release_all`).
"""
