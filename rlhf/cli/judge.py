"""`rlhf judge`: a model judges a project's tasks (pairs in both orders, ratings per rubric dimension, ranking groups in two card orders) as the external user judge:<name>."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from rlhf.cli import app, fail


@app.command()
def judge(
    project: str = typer.Option(..., "--project", help="Project name (or id) whose tasks are judged."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="A local causal LM (smollm2-135m-instruct, a checkpoint, an adapter); with --endpoint, the served model's name."),
    endpoint: Optional[str] = typer.Option(None, "--endpoint", help="An OpenAI-compatible chat-completions server (vLLM, llama.cpp, TGI, a hosted API)."),
    reward: Optional[Path] = typer.Option(None, "--reward", help="A reward model directory trained here, as a judge of pairs and ranking groups."),
    simulated: bool = typer.Option(False, "--simulated", help="The simulated judge with planted biases (--sim-position-bias, --sim-length-bias): to try the judge metrics."),
    name: Optional[str] = typer.Option(None, "--name", help="Judge name: labels are stored as the external user judge:<name> (default: from the model)."),
    kinds: str = typer.Option("pairwise,rating,ranking", "--kinds", help="Task kinds to judge: pairwise, rating, ranking (comma list)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Judge at most this many pending tasks in this run."),
    batch_tasks: int = typer.Option(16, "--batch-tasks", help="Tasks sent together and stored in one transaction."),
    batch_size: int = typer.Option(16, "--batch-size", help="Local or reward model: rows run through the model together."),
    device: Optional[str] = typer.Option(None, "--device", help="Local or reward model: torch device (default CUDA when present)."),
    load_in_4bit: bool = typer.Option(False, "--4bit", help="Local model: load it quantised to NF4."),
    api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help="Endpoint: environment variable holding the key (never stored or logged)."),
    concurrency: int = typer.Option(8, "--concurrency", help="Endpoint: requests in flight at once."),
    timeout: float = typer.Option(60.0, "--timeout", help="Endpoint: seconds per request."),
    retries: int = typer.Option(3, "--retries", help="Endpoint: retries after connection errors, timeouts, 429 and 5xx (exponential backoff)."),
    rate_limit: float = typer.Option(0.0, "--rate-limit", help="Endpoint: requests per second at most (0 = none)."),
    tie_margin: float = typer.Option(0.1, "--tie-margin", help="Reward judge: normalised score difference below which a pair (or ranked replies) is a tie."),
    pair_template: Optional[Path] = typer.Option(None, "--pair-template", help="Template file for pairs: {prompt} {first} {second} required, {guidelines} optional."),
    rating_template: Optional[Path] = typer.Option(None, "--rating-template", help="Template file for ratings: {prompt} {response} {rubric} required; {dimensions} {example} {guidelines} optional."),
    ranking_template: Optional[Path] = typer.Option(None, "--ranking-template", help="Template file for ranking groups: {prompt} {responses} required; {letters} {example} {count} {guidelines} optional."),
    max_guideline_chars: int = typer.Option(1500, "--max-guideline-chars", help="Characters of the project's guidelines put in the prompt (0 = none)."),
    pair_max_tokens: int = typer.Option(24, "--pair-max-tokens", help="Reply tokens at most for a pair verdict."),
    rating_max_tokens: int = typer.Option(64, "--rating-max-tokens", help="Reply tokens at most for a rating."),
    ranking_max_tokens: int = typer.Option(32, "--ranking-max-tokens", help="Reply tokens at most for a ranking order."),
    sim_position_bias: float = typer.Option(0.0, "--sim-position-bias", help="Simulated judge: probability of picking the first-shown response regardless."),
    sim_length_bias: float = typer.Option(0.0, "--sim-length-bias", help="Simulated judge: logits per doubling of length toward the longer response."),
    sim_unparsable_rate: float = typer.Option(0.0, "--sim-unparsable-rate", help="Simulated judge: share of replies that do not parse."),
    seed: int = typer.Option(0, "--seed", help="Simulated judge: seeds its draws."),
    as_json: bool = typer.Option(False, "--json", help="Print the run's summary as JSON."),
    database_url: Optional[str] = typer.Option(None, "--database-url", envvar="RLHF_DATABASE_URL", help="Database URL (default: SQLite file data/rlhf.db)."),
) -> None:
    """A model judges the project's pending tasks; rerun to continue an interrupted run (no task is judged twice)."""
    from rlhf.db import database_url as default_url, make_engine
    from rlhf.judge.build import JudgeSpec, make_judge
    from rlhf.judge.client import EndpointError
    from rlhf.judge.run import JudgeError, JudgeOptions, judge_project
    from rlhf.judge.templates import TemplateError, load_templates
    from rlhf.models import ModelNotFoundError
    from rlhf.progress import ConsoleReporter
    from rlhf.roles import SYSTEM

    spec = JudgeSpec(
        model=model, endpoint=endpoint, reward=str(reward) if reward else None, simulated=simulated, api_key_env=api_key_env,
        concurrency=concurrency, timeout_s=timeout, retries=retries, rate_limit=rate_limit, batch_size=batch_size, device=device,
        load_in_4bit=load_in_4bit, tie_margin=tie_margin, sim_position_bias=sim_position_bias, sim_length_bias=sim_length_bias,
        sim_unparsable_rate=sim_unparsable_rate, seed=seed,
    )
    try:
        templates = load_templates(pair_template, rating_template, max_guideline_chars=max_guideline_chars, ranking_template=ranking_template)
        options = JudgeOptions(name=name or spec.default_name(), kinds=tuple(k.strip() for k in kinds.split(",") if k.strip()), limit=limit,
                               batch_tasks=batch_tasks, pair_max_tokens=pair_max_tokens, rating_max_tokens=rating_max_tokens,
                               ranking_max_tokens=ranking_max_tokens)
    except (JudgeError, TemplateError) as exc:
        raise fail(str(exc)) from None
    engine = make_engine(database_url or default_url())
    reporter = None if as_json else ConsoleReporter("judge", unit="task")
    try:
        summary = judge_project(engine, SYSTEM, project, make_judge(spec), options, templates=templates, reporter=reporter)
    except (JudgeError, TemplateError, ModelNotFoundError, ValueError, EndpointError) as exc:
        raise fail(f"{exc} (judgments stored before this are kept; rerun to continue)" if isinstance(exc, EndpointError) else str(exc)) from None
    finally:
        if reporter is not None:
            reporter.close()
        engine.dispose()
    typer.echo(json.dumps(summary.as_dict(), indent=2) if as_json else summary.line())


@app.command()
def serve(
    model: str = typer.Option("smollm2-135m-instruct", "--model", "-m", help="A local causal LM (the packaged alias, a checkpoint, an adapter)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", help="Port (0: any free port, announced on stdout)."),
    model_name: Optional[str] = typer.Option(None, "--model-name", help="The name clients send as `model` (default: --model as given)."),
    api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help="Environment variable holding the key clients must send (default: no key)."),
    max_batch: int = typer.Option(16, "--max-batch", help="Concurrent requests generated together at most."),
    batch_wait_ms: float = typer.Option(50.0, "--batch-wait-ms", help="How long the first request waits for others to batch with (concurrent clients rarely arrive within 10 ms of each other)."),
    device: Optional[str] = typer.Option(None, "--device", help="torch device (default CUDA when present)."),
    prefix_cache: bool = typer.Option(True, "--prefix-cache/--no-prefix-cache", help="Greedy requests: prefill the prompt prefix shared with the batch (and the batch before) once."),
) -> None:
    """A minimal OpenAI-compatible chat-completions server around a local model (for `rlhf judge/generate --endpoint`)."""
    import sys

    from rlhf.judge.client import EndpointError, read_api_key
    from rlhf.judge.server import serve as run_server

    try:
        key = read_api_key(api_key_env)
    except EndpointError as exc:
        raise fail(str(exc)) from None

    def announce(line: str) -> None:
        typer.echo(line)
        sys.stdout.flush()

    run_server(model, host=host, port=port, api_key=key, model_name=model_name, max_batch=max_batch,
               batch_wait_s=batch_wait_ms / 1000.0, device=device, announce=announce, prefix_cache=prefix_cache)


@app.command("judge-votes")
def judge_votes(
    project: str = typer.Option(..., "--project", help="Project name (or id)."),
    judge_name: str = typer.Option(..., "--judge", help="The judge (NAME or judge:NAME) whose disagreements with the human consensus get more votes."),
    max_overlap: Optional[int] = typer.Option(None, "--max-overlap", help="Cap on votes per task (default: the project's max overlap; larger raises it)."),
    database_url: Optional[str] = typer.Option(None, "--database-url", envvar="RLHF_DATABASE_URL", help="Database URL (default: SQLite file data/rlhf.db)."),
) -> None:
    """Ask one more human vote on each complete pair where the judge contradicts the people's consensus."""
    from rlhf.assign import AnnotationError
    from rlhf.db import database_url as default_url, make_engine
    from rlhf.judge.run import JudgeError
    from rlhf.judge.uses import request_votes_where_judge_disagrees
    from rlhf.roles import SYSTEM

    engine = make_engine(database_url or default_url())
    try:
        raised = request_votes_where_judge_disagrees(engine, SYSTEM, project, judge_name, max_overlap=max_overlap)
    except (AnnotationError, JudgeError, ValueError) as exc:
        raise fail(str(exc)) from None
    finally:
        engine.dispose()
    typer.echo(f"{len(raised)} task(s) asked for one more vote" + (f": {', '.join(map(str, raised[:20]))}{' …' if len(raised) > 20 else ''}" if raised else ""))
