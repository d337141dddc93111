"""Adapter: rule enas_search → pipeline_lib.nas.enas_search.search."""

import pandas as pd

from pipeline_lib.io.atomic import write_csv, write_json
from pipeline_lib.models.end_to_end import split_digest
from pipeline_lib.runtime.devices import configure_threads
from pipeline_lib.training.loop import Checkpoint
from pipeline_lib.nas.enas_search import STATE_FILE, search
from pipeline_lib.nas.search_data import as_tensors, train_halves
from pipeline_lib.step import run_step


def main(step):
    p = step.param("enas_search")
    configure_threads(step.threads)
    split = pd.read_parquet(step.input.split)
    child_rows, reward_rows = train_halves(split, seed=step.seed, max_images=p["max_images"])
    step.log.info("ENAS data: %d child-train and %d reward images (training split only)", len(child_rows), len(reward_rows))
    genotype, history = search(
        as_tensors(child_rows, p["image_size"]),
        as_tensors(reward_rows, p["image_size"]),
        num_classes=2,
        epochs=p["epochs"],
        seed=step.seed,
        device=step.device(),
        log=step.log,
        state_dir=step.params.state_dir,
        config={**p["settings"], "balance_classes": p["balance_classes"]},
        resume_key=f"{split_digest(split)}-{p['image_size']}-{p['max_images']}-{p['balance_classes']}",
    )
    genotype.save(step.output.genotype)
    write_json(step.output.archs, history)
    write_csv(pd.DataFrame([{k: v for k, v in row.items() if k != "sampled_archs"} for row in history]), step.output.history)
    Checkpoint(step.params.state_dir, STATE_FILE).clear()  # every output is in place: the resume state is done
    step.log.info("ENAS chose %s", genotype.to_dict())


run_step(snakemake, main)  # noqa: F821 (injected by Snakemake)
