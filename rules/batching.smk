# Several shards per GPU job (gpu_jobs in the config; docs/job-sizing.md). For every stage that opts in
# (finet2i.core.pipeline.STAGES: batchable=True), two rules derived from the stage's own rule, which stays as it is
# and runs when the stage is not batched:
#   <stage>_batch    one GPU job per batch of shards (per subset for generate): the stage's own script over each
#                    shard on engines loaded once (workflow_scripts/batch.py); each shard's result goes to
#                    results/<stage>/.batched/ with a fingerprint (its inputs' bytes, params, code), so a rerun
#                    reuses every unchanged shard and a killed job redoes only the shards it had not finished;
#   <stage>_publish  one local job per shard: the cached result at the stage rule's own paths, byte for byte.
# Unbatched, the publish rule's shard constraint matches nothing and the stage's rule is the only producer.


for _stage in batching.BATCHABLE:

    rule:
        name:
            f"{_stage}_batch"
        input:
            batch_inputs(_stage),
        output:
            manifest=(
                temp(batch_manifest(_stage))
                if shard_outputs_are_temp(_stage)
                else batch_manifest(_stage)
            ),
        log:
            f"logs/{_stage}_batch/{unit_pattern(_stage, '{batch}')}.log",
        benchmark:
            f"results/benchmarks/{_stage}_batch/{unit_pattern(_stage, '{batch}')}.tsv"
        priority: workflow.get_rule(_stage).priority
        conda:
            workflow.get_rule(_stage).conda_env
        threads: threads_of(_stage)
        resources:
            **resources_of(_stage, runtime=batch_runtime(_stage)),
        params:
            **shard_rule_params(_stage),
            stage=_stage,
            units=batch_units(_stage),
            script_source=script_source(_stage),
        script:
            "../workflow_scripts/batch.py"

    rule:
        name:
            f"{_stage}_publish"
        input:
            manifest=publish_manifest(_stage),
        output:
            **publish_outputs(_stage),
        log:
            unit_log(_stage, f"{_stage}_publish"),
        wildcard_constraints:
            **{shard_wildcard(_stage): batched_shard(_stage)},
        localrule: True
        params:
            unit=publish_unit_id(_stage),
            move=shard_outputs_are_temp(_stage),
        run:
            publish_unit(
                input.manifest,
                params.unit,
                list(output),
                move=params.move,
                log_path=log[0],
            )

    workflow.ruleorder(f"{_stage}_publish", _stage)
