"""Adapter: rule report_tsne → pipeline_lib.report (t-SNE of validation features, figure + CSV)."""

from pipeline_lib.io.atomic import write_csv
from pipeline_lib.runtime.devices import configure_threads
from pipeline_lib.report.config import TsneConfig
from pipeline_lib.report.figures import tsne_figure
from pipeline_lib.report.tsne import embed_feature_sets, separation
from pipeline_lib.report.provenance import publish_figure
from pipeline_lib.step import run_step

TITLES = {"pretrained": "pretrained ResNet", "finetuned": "fine-tuned ResNet (FBP)"}


def main(step):
    configure_threads(step.threads)
    seed = step.param("report.seed")
    frame, embeddings = embed_feature_sets(
        {"pretrained": step.input.pretrained, "finetuned": step.input.finetuned},
        TsneConfig.from_params(step.param("report.tsne")),
        seed=seed,
    )
    scores = {}
    for name in embeddings:
        part = frame[frame["features"] == name]
        scores[name] = separation(part[["x", "y"]].to_numpy(), part["label"].to_numpy())
    write_csv(frame, step.output.csv)
    fig = tsne_figure(frame, TITLES, scores)
    emb = next(iter(embeddings.values()))
    n = int((frame["features"] == "pretrained").sum())
    pca = f"PCA to {emb.pca_components} dimensions, then " if emb.pca_components else ""
    score_text = ", ".join(f"{TITLES[k]} {round(v, 2) + 0.0:.2f}" for k, v in scores.items() if v is not None)
    caption = (
        f"t-SNE of the {n} validation images' penultimate ResNet features: left the pretrained backbone, "
        f"right the backbone after full fine-tuning (resnet_fbp); blue = good, red = bad. {pca}t-SNE with "
        f"perplexity {emb.perplexity:g}, seed {seed}. Silhouette of the two classes in 2-D: {score_text or 'n/a'}. "
        f"Coordinates: {step.output.csv}."
    )
    publish_figure(
        step,
        fig,
        title="t-SNE of validation features, pretrained vs fine-tuned ResNet",
        caption=caption,
        details={"n": n, "perplexity": emb.perplexity, "pca_components": emb.pca_components, "silhouette": scores},
    )
    step.log.info("t-SNE: %d validation points per feature set, perplexity %g, silhouette %s", n, emb.perplexity, scores)


run_step(snakemake, main)  # noqa: F821 (injected by Snakemake)
