"""The Training page queues an `sft` job from its form and charts the job's loss while it runs."""

from __future__ import annotations

from apphelpers import no_exception, texts

from rlhf.jobs import claim_next_job, list_jobs, report_state

from test_training import WORKER, admin_on_training, chart_data, charts, submit_button, tp


def test_the_sft_form_queues_a_job_with_its_params(app_env, tmp_path):
    data = tmp_path / "demos.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n')
    at = admin_on_training(app_env)
    assert "sft" in at.selectbox(key=tp.KIND).options
    at.selectbox(key=tp.KIND).set_value("sft").run()
    no_exception(at)
    assert at.text_input(key=tp.field_key("sft", "method")).value == "lora"
    at.text_input(key=tp.field_key("sft", "data")).input(str(data))
    at.text_input(key=tp.field_key("sft", "method")).input("qlora")
    at.number_input(key=tp.field_key("sft", "max_steps")).set_value(5)
    at.text_input(key=tp.field_key("sft", "optim")).input("paged_adamw_8bit")
    submit_button(at).click().run()
    no_exception(at)
    [job] = list_jobs(app_env.engine, app_env.admin, kind="sft")
    assert job.status == "queued"
    assert (job.params["data"], job.params["method"], job.params["max_steps"], job.params["optim"]) == (str(data), "qlora", 5, "paged_adamw_8bit")
    assert job.params["policy"] == "smollm2-135m-instruct"  # untouched fields keep their defaults
    assert any(f"Queued job #{job.id} (sft)" in s.value for s in at.success)


def test_a_running_sft_job_shows_its_loss_live(app_env, tmp_path):
    from rlhf.job_kinds import load_registry
    from rlhf.jobs import submit_job

    job = submit_job(app_env.engine, app_env.admin, "sft", {"data": str(tmp_path / "d.jsonl")}, project=app_env.project_id, registry=load_registry())
    assert claim_next_job(app_env.engine, WORKER).id == job.id
    report_state(app_env.engine, job.id, WORKER, progress=0.5, message="step 2/4", metric_points=[(1, {"loss": 2.5}), (2, {"loss": 2.1})])
    at = admin_on_training(app_env)
    no_exception(at)
    assert f"Live: progress re-read every {tp.REFRESH_RUNNING_S:g} s" in texts(at)
    [chart] = charts(at)
    drawn = chart_data(chart)
    assert drawn[drawn["group"] == "Loss"][["step", "value"]].to_dict("list") == {"step": [1, 2], "value": [2.5, 2.1]}
    report_state(app_env.engine, job.id, WORKER, progress=0.75, message="step 3/4", metric_points=[(3, {"loss": 1.8})])
    at.run()
    [chart] = charts(at)
    assert chart_data(chart).query("metric == 'loss'")["value"].tolist() == [2.5, 2.1, 1.8]
