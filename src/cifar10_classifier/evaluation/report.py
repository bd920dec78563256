"""report.md: the write-up a person would otherwise do by hand, pointing at the figures beside it."""

from __future__ import annotations

from cifar10_classifier.atomic import atomic_write_text
from cifar10_classifier.runs import RunFolder


def write_report(run: RunFolder, metrics: dict, history: list[dict], card: dict) -> None:
    headline = metrics.get("test_tta", metrics["test"])
    lines = [
        f"# {card.get('name', 'CIFAR-10 model')}",
        "",
        f"- recipe: `{card.get('recipe', '?')}`, model `{card.get('model', '?')}`",
        f"- data: `{card.get('data', {}).get('source', '?')}`",
        f"- epochs trained: {card.get('epochs_trained', len(history))}"
        + (f", best epoch {card['best_epoch']} (early stopping)" if card.get("stopped_early") else ""),
        f"- training time: {card.get('train_seconds', 0):.0f} s on {card.get('machine', {}).get('cpu', '?')}",
        "",
        "| metric | value |",
        "|---|---|",
        f"| test accuracy | {metrics['test_accuracy']:.2%} |",
        f"| test accuracy with TTA (level {metrics['tta_level']}) | {metrics['test_accuracy_tta']:.2%} |",
        f"| test loss | {metrics['test']['loss']:.4f} |",
        "",
        "## Per class" + (" (with TTA)" if "test_tta" in metrics else ""),
        "",
        "| class | precision | recall = accuracy | support |",
        "|---|---|---|---|",
    ]
    for row in headline["per_class"]:
        lines.append(f"| {row['class']} | {row['precision']:.2%} | {row['recall']:.2%} | {row['support']} |")
    lines += [
        "",
        "## Curves",
        "",
        "![loss and accuracy per epoch](curves.png)" if history else "(no history)",
        "",
        "## Confusion matrix",
        "",
        "![confusion matrix](confusion.png)",
        "",
        *_calibration_lines(metrics),
        "## Most confident mistakes",
        "",
        "![most confident mistakes](mistakes.png)",
        "",
    ]
    if history:
        lines += [
            "## Epochs",
            "",
            "| epoch | train loss | train acc | val loss | val acc | lr | img/s |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in history:
            val_loss = f"{row['val_loss']:.4f}" if row.get("val_loss") is not None else "-"
            val_acc = f"{row['val_accuracy']:.2%}" if row.get("val_accuracy") is not None else "-"
            lines.append(
                f"| {row['epoch']} | {row['train_loss']:.4f} | {row['train_accuracy']:.2%} | {val_loss} | "
                f"{val_acc} | {row['lr']:.3g} | {row['images_per_second']:,.0f} |"
            )
    atomic_write_text(run.report, "\n".join(lines) + "\n")


def _calibration_lines(metrics: dict) -> list[str]:
    calibration = metrics.get("calibration")
    if not calibration:
        return []
    return [
        "## Calibration",
        "",
        f"One temperature T = {calibration['temperature']:.3f}, fitted by minimising the NLL on "
        f"{calibration.get('fit_on', 'held-out training images')}; never on test images. Expected calibration "
        f"error on the test split ({calibration['bins']} equal-width confidence bins):",
        "",
        "| | ECE |",
        "|---|---|",
        f"| before (T = 1) | {calibration['ece_before']:.2%} |",
        f"| after (T = {calibration['temperature']:.3f}) | {calibration['ece_after']:.2%} |",
        "",
        "![reliability diagram](calibration.png)",
        "",
    ]
