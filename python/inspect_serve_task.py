"""A two-sample Inspect AI task for checking that `autosafe serve` works as an `openai-api`
model (crates/autosafe/tests/openai_clients.rs runs it with `inspect eval`)."""

from inspect_ai import Task, task
from inspect_ai.dataset import Sample
from inspect_ai.scorer import includes
from inspect_ai.solver import generate


@task
def serve_smoke():
    return Task(
        dataset=[
            Sample(input="Say hello.", target="hello"),
            Sample(input="Name a colour.", target="blue"),
        ],
        solver=generate(),
        scorer=includes(),
    )
