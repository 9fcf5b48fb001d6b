"""`rlhf generate`: sample responses to a prompts file, or sample a trained policy as a new round."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from rlhf.cli import app, fail


@app.command()
def generate(
    model: str = typer.Option(
        "smollm2-135m-instruct", "--model", "-m",
        help="HF id, local checkpoint, adapter dir, .gguf file, or the packaged alias smollm2-135m-instruct.",
    ),
    prompts: Optional[Path] = typer.Option(None, "--prompts", "-p", help="Prompts file: JSONL (prompt, category, id, meta) or .txt (one per line)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output JSONL in the importer's shape (a); with --policy, an optional copy."),
    n: int = typer.Option(2, "--n", help="Responses per prompt."),
    temperature: float = typer.Option(0.7, "--temperature", help="Sampling temperature (0 = greedy)."),
    temperatures: Optional[str] = typer.Option(None, "--temperatures", help="Comma list cycled over the n samples, e.g. 0.3,0.8,1.2 (overrides --temperature)."),
    top_p: float = typer.Option(0.95, "--top-p", help="Nucleus sampling mass (1 = off)."),
    top_k: int = typer.Option(0, "--top-k", help="Top-k filter (0 = off)."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", help="Generated tokens per response at most."),
    seed: int = typer.Option(0, "--seed", help="Base seed: same seed, prompts, settings and --batch-size give the same output."),
    batch_size: int = typer.Option(8, "--batch-size", help="Rows generated together."),
    load_in_4bit: bool = typer.Option(False, "--4bit", help="Load the model quantised to NF4 (bitsandbytes)."),
    model_name: Optional[str] = typer.Option(None, "--model-name", help="Name recorded as each response's model (default: from the model)."),
    no_chat_template: bool = typer.Option(False, "--no-chat-template", help="Feed prompts raw even if the tokenizer has a chat template."),
    policy: Optional[Path] = typer.Option(None, "--policy", help="Close the loop: a trained policy (adapter dir or checkpoint) to sample on --project's prompts."),
    project: Optional[str] = typer.Option(None, "--project", help="With --policy: the project whose prompts are sampled and into which the round is imported."),
    round_: Optional[int] = typer.Option(None, "--round", help="With --policy: the round number N (pairs are made against round N-1)."),
    max_pairs_per_prompt: int = typer.Option(4, "--max-pairs-per-prompt", help="With --policy: pairwise tasks per prompt at most."),
    rating_tasks: bool = typer.Option(False, "--rating-tasks", help="With --policy: also make a rating task per new response."),
    limit: Optional[int] = typer.Option(None, "--limit", help="With --policy: sample only the first N prompts of the project."),
    database_url: Optional[str] = typer.Option(None, "--database-url", envvar="RLHF_DATABASE_URL", help="Database URL (default: SQLite file data/rlhf.db)."),
    endpoint: Optional[str] = typer.Option(None, "--endpoint", help="Sample from an OpenAI-compatible server (vLLM, llama.cpp, TGI) serving --model NAME, instead of in-process."),
    api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help="With --endpoint: environment variable holding the key (never stored or logged)."),
    concurrency: int = typer.Option(8, "--concurrency", help="With --endpoint: requests in flight at once."),
    timeout: float = typer.Option(120.0, "--timeout", help="With --endpoint: seconds per request."),
) -> None:
    """Sample responses: `--prompts FILE --out FILE`, or `--policy DIR --project NAME --round N` (or `--endpoint URL --model NAME` for either)."""
    from rlhf.generate import PromptsFileError, SamplingConfig, parse_temperatures

    chat_template = False if no_chat_template else None
    try:
        temps = parse_temperatures(temperatures) if temperatures is not None else (temperature,)
        config = SamplingConfig(
            n=n, temperatures=temps, top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens,
            seed=seed, batch_size=batch_size,
        )
    except ValueError as exc:
        raise fail(str(exc)) from None

    client = None
    if endpoint is not None:
        from rlhf.judge.client import ChatClient, ClientConfig, EndpointError, read_api_key

        if policy is not None:
            raise fail("--endpoint samples the served --model NAME: drop --policy")
        try:
            client = ChatClient(endpoint, model, api_key=read_api_key(api_key_env), config=ClientConfig(concurrency=concurrency, timeout_s=timeout))
        except (EndpointError, ValueError) as exc:
            raise fail(str(exc)) from None
        if project is not None or round_ is not None:
            if prompts is not None or project is None or round_ is None:
                raise fail("--endpoint with --project NAME --round N samples the project's prompts (no --prompts)")
            _generate_round(model, project, round_, config, out, load_in_4bit, model_name, chat_template,
                            max_pairs_per_prompt, rating_tasks, limit, database_url, endpoint_client=client)
            return

    if policy is not None:
        if prompts is not None:
            raise fail("--policy samples the project's own prompts: drop --prompts")
        if project is None or round_ is None:
            raise fail("--policy needs --project NAME and --round N")
        _generate_round(policy, project, round_, config, out, load_in_4bit, model_name, chat_template,
                        max_pairs_per_prompt, rating_tasks, limit, database_url)
        return
    if project is not None or round_ is not None:
        raise fail("--project and --round go with --policy")
    if prompts is None or out is None:
        raise fail("give --prompts FILE and --out FILE (or --policy DIR --project NAME --round N)")

    from rlhf.generate import generate_file
    from rlhf.judge.client import EndpointError
    from rlhf.models import ModelNotFoundError
    from rlhf.progress import ConsoleReporter

    reporter = ConsoleReporter("generate", unit="response")
    try:
        summary = generate_file(
            model, prompts, out, config=config, load_in_4bit=load_in_4bit, model_name=model_name,
            use_chat_template=chat_template, reporter=reporter, endpoint_client=client,
        )
    except (PromptsFileError, ModelNotFoundError, EndpointError) as exc:
        raise fail(str(exc)) from None
    finally:
        reporter.close()
    typer.echo(str(summary))


def _generate_round(policy, project, round_number, config, out, load_in_4bit, model_name, chat_template,
                    max_pairs_per_prompt, rating_tasks, limit, database_url, endpoint_client=None) -> None:
    from rlhf.db import database_url as default_url, make_engine
    from rlhf.generate import GenerationRoundError, generate_round
    from rlhf.importer import ImportFormatError
    from rlhf.judge.client import EndpointError
    from rlhf.models import ModelNotFoundError
    from rlhf.progress import ConsoleReporter
    from rlhf.roles import SYSTEM

    engine = make_engine(database_url or default_url())
    reporter = ConsoleReporter(f"round {round_number}", unit="response")
    try:
        summary = generate_round(
            engine, SYSTEM, policy=policy, project=project, round=round_number, **config.as_dict(),
            load_in_4bit=load_in_4bit, model_name=model_name, use_chat_template=chat_template,
            max_pairs_per_prompt=max_pairs_per_prompt, make_rating_tasks=rating_tasks,
            limit=limit, out=out, reporter=reporter, endpoint_client=endpoint_client,
        )
    except (GenerationRoundError, ModelNotFoundError, ImportFormatError, EndpointError) as exc:
        raise fail(str(exc)) from None
    finally:
        reporter.close()
        engine.dispose()
    typer.echo(str(summary))
