"""What plans and runs the workflow, and is in no job's code inputs: the config check
(``config``), the plan the rules call (``plan`` and its parts), the rules' stages and cost
models (``stages``), the rerun table (``reruns``), the dry-run reader (``dryrun``: one, for
the projection and the audit), the cost projection of ``ordermerge plan`` (``projection``),
the memory estimate (``memory``), the code inputs (``codedeps``) and the run lock
(``runlock``).

None of these is imported by a job's script (docs/reruns.md's table lists them under "none"),
so editing one reruns no job. The warm worker (``ordermerge/warm.py``) stays beside the
package's other modules: its path is in every job's command and the cost table reads its
usage logs (the cost job imports it).
"""
