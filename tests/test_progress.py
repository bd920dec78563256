from cifar10_classifier.training.progress import Progress

ROW = {
    "epoch": 2,
    "train_loss": 1.25,
    "train_accuracy": 0.5,
    "val_loss": 1.5,
    "val_accuracy": 0.4,
    "lr": 0.01,
    "images_per_second": 1234.4,
    "elapsed_seconds": 61.0,
}


def test_epoch_line_says_where_the_run_is(capsys):
    progress = Progress(enabled=True, total_epochs=5)
    progress.batch(2, 64, 128, 0.0)  # not a terminal under pytest: no live bar
    progress.epoch(ROW, eta_seconds=91.6)
    out, err = capsys.readouterr()
    assert err == ""
    assert out.strip() == (
        "epoch   2/5 train_loss 1.2500 train_acc 0.5000 val_loss 1.5000 val_acc 0.4000 lr 0.01 1,234 img/s "
        "elapsed 61s eta 92s"
    )


def test_disabled_progress_is_silent(capsys):
    Progress(enabled=False, total_epochs=5).epoch(ROW, eta_seconds=1.0)
    assert capsys.readouterr() == ("", "")
