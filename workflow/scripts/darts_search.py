"""Adapter: rule darts_search → pipeline_lib.nas.darts_search.search (+ derive)."""

import pandas as pd

from pipeline_lib.io.atomic import write_csv
from pipeline_lib.runtime.devices import configure_threads
from pipeline_lib.training.loop import Checkpoint
from pipeline_lib.nas.darts_config import DartsConfig
from pipeline_lib.nas.darts_search import CHECKPOINT_FILE, build_network, search, write_alpha_history
from pipeline_lib.nas.genotypes import count_skip_connects
from pipeline_lib.nas.search_data import as_tensors, train_halves
from pipeline_lib.step import run_step
from torch.utils.data import TensorDataset


def main(step):
    cfg = DartsConfig.from_params({**step.param("darts_search"), "seed": step.seed})
    configure_threads(step.threads)
    split = pd.read_parquet(step.input.split)
    weight_rows, alpha_rows = train_halves(split, seed=cfg.seed, max_images=cfg.max_images)
    step.log.info("DARTS data: %d images for w, %d for α (training split only)", len(weight_rows), len(alpha_rows))
    result = search(build_network(cfg), TensorDataset(*as_tensors(weight_rows, cfg.image_size)),
                    TensorDataset(*as_tensors(alpha_rows, cfg.image_size)), cfg, device=step.device(), log=step.log,
                    state_dir=step.params.state_dir)
    result.genotype.save(step.output.genotype)
    write_alpha_history(result, step.output.alpha_history)
    write_csv(pd.DataFrame([{k: v for k, v in row.items() if not isinstance(v, (dict, list))} for row in result.epoch_log]),
              step.output.history)
    Checkpoint(step.params.state_dir, CHECKPOINT_FILE).clear()  # every output is in place: the resume state is done
    step.log.info("DARTS (%s order) derived %s; skip-connects in the normal cell: %d",
                  cfg.order, result.genotype.to_dict(), count_skip_connects(result.genotype))


run_step(snakemake, main)  # noqa: F821 (injected by Snakemake)
