"""Adapter: rule darts_search → pipeline_lib.nas.darts_search.search (+ derive)."""

import pandas as pd

from pipeline_lib.atomic import write_csv
from pipeline_lib.devices import configure_threads
from pipeline_lib.nas.darts_search import clear_search_state, search, write_alpha_history
from pipeline_lib.nas.genotypes import count_skip_connects
from pipeline_lib.nas.search_data import as_tensors, train_halves
from pipeline_lib.nas.search_model import SearchNetwork
from pipeline_lib.scripting import run_step
from torch.utils.data import TensorDataset


def main(step):
    p = dict(step.param("darts_search"))
    configure_threads(step.threads)
    split = pd.read_parquet(step.input.split)
    weight_rows, alpha_rows = train_halves(split, seed=p["seed"], max_images=p["max_images"], balance=p["balance_classes"])
    step.log.info("DARTS data: %d images for w, %d for α (training split only)", len(weight_rows), len(alpha_rows))
    model = SearchNetwork(C=p["channels"], num_classes=2, layers=p["layers"], nodes=p["nodes"], ops=p["ops"], seed=p["seed"])
    result = search(
        model,
        TensorDataset(*as_tensors(weight_rows, p["image_size"])),
        TensorDataset(*as_tensors(alpha_rows, p["image_size"])),
        epochs=p["epochs"],
        order=p["order"],
        batch_size=p["batch_size"],
        w_lr=p["w_lr"],
        w_lr_min=p["w_lr_min"],
        w_momentum=p["w_momentum"],
        w_weight_decay=p["w_weight_decay"],
        grad_clip=p["grad_clip"],
        alpha_lr=p["alpha_lr"],
        alpha_betas=tuple(p["alpha_betas"]),
        alpha_weight_decay=p["alpha_weight_decay"],
        xi=p["xi"],
        seed=p["seed"],
        max_steps_per_epoch=p["max_steps_per_epoch"],
        device=step.device(),
        log=step.log,
        state_dir=step.params.state_dir,
        meta={"image_size": p["image_size"], "order": p["order"], "balance_classes": p["balance_classes"]},
    )
    result.genotype.save(step.output.genotype)
    write_alpha_history(result, step.output.alpha_history)
    write_csv(pd.DataFrame([{k: v for k, v in row.items() if not isinstance(v, (dict, list))} for row in result.epoch_log]),
              step.output.history)
    clear_search_state(step.params.state_dir)  # every output is in place: the resume state is done
    step.log.info("DARTS (%s order) derived %s; skip-connects in the normal cell: %d",
                  p["order"], result.genotype.to_dict(), count_skip_connects(result.genotype))


run_step(snakemake, main)  # noqa: F821 (injected by Snakemake)
