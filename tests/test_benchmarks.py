"""The benchmark plumbing that every published number goes through: resumable rows, the targets
report, and the GPU queue script (run here with a stand-in for python, so no training happens)."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import report  # noqa: E402
import rows  # noqa: E402


def _markdown(all_rows: list[dict]) -> str:
    return "\n".join(str(r["k"]) for r in all_rows)


def _append(path: str, k: int) -> None:
    rows.append_row(path, {"k": k}, lambda r: r["k"], path + ".md", _markdown)


def test_rows_appended_side_by_side_are_all_kept_once(tmp_path):
    path = str(tmp_path / "results.json")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.starmap(_append, [(path, k) for k in range(8)] + [(path, 3)])  # 3 twice: kept once
    kept = sorted(r["k"] for r in rows.load_rows(path))
    assert kept == list(range(8))
    with open(path + ".md") as f:  # the markdown is rewritten under the lock: the last writer saw every row
        assert sorted(int(line) for line in f.read().split()) == kept


def _row(model: str, acc: float, auc: float, machine: str = "CPU only, 2 cores, torch 2", epochs: int = 10, seeds=(0, 1, 2), options=None, size: int = 28) -> dict:
    return {"dataset": "synth-lesion", "size": size, "model": model, "options": options or {}, "preset": "official", "epochs": epochs, "seeds": list(seeds),
            "machine": machine, "test": {"acc": {"mean": acc, "std": 0.01}, "auc": {"mean": auc, "std": 0.01}}}


def _exit_result(seed: int, change: float, saving: float, threshold: float = 0.9) -> dict:
    full = {"threshold": 1.01, "acc": 0.9, "mflops_per_image": 100.0, "default": False}
    default = {"threshold": threshold, "acc": 0.9 + change / 100, "mflops_per_image": 100.0 * (1 - saving / 100), "default": True}
    return {"dataset": "breastmnist", "epochs": 100, "seed": seed, "rows": [default, full]}


def test_early_exit_targets_pool_the_seeds_of_a_budget():
    exits = {"results": [_exit_result(0, -0.64, 30.0), _exit_result(1, 0.0, 20.0), _exit_result(2, 0.32, 25.0)]}
    [(name, measured, verdict)] = report.early_exit_targets(exits)
    assert name.endswith("test ACC within 0.5 points of all fixations, >= 5% fewer FLOPs (breastmnist, 100 epochs)")
    assert measured == "-0.11 +/- 0.49 points, 25.0 +/- 5.0% fewer FLOPs (3 seeds, thresholds 0.90, 0.90, 0.90)" and verdict == "met"
    [(_, measured, verdict)] = report.early_exit_targets({"results": [_exit_result(0, -0.64, 30.0)]})
    assert measured.startswith("-0.64 points, 30.0% fewer") and verdict == "**missed**"  # one seed: no spread, and beyond 0.5


def test_accuracy_verdicts_say_when_the_seeds_cannot_tell_the_models_apart():
    close = {"rows": [_row("focusnet", 0.905, 0.951), _row("resnet18", 0.900, 0.950)]}
    [(_, measured, verdict)] = report.accuracy_targets(close)
    assert verdict == "met (within the seed spread)" and "(+0.005, spread 0.010)" in measured
    behind = {"rows": [_row("focusnet", 0.895, 0.951), _row("resnet18", 0.900, 0.950)]}
    assert report.accuracy_targets(behind)[0][2] == "**missed** (within the seed spread)"
    single = {"rows": [_row("focusnet", 0.9, 0.95, seeds=(0,)), _row("resnet18", 0.8, 0.9, seeds=(0,))]}
    assert report.accuracy_targets(single)[0][2] == "met (1 seed: no spread)"
    mixed = {"rows": [_row("focusnet", 0.9, 0.95), {**_row("resnet18", 0.8, 0.9), "sample_order": rows.SAMPLE_ORDER}]}
    assert report.accuracy_targets(mixed)[0][1].endswith("(seed sample orders differ: 3*)")
    assert "the larger of the two rows' seed standard" in report.targets()  # the rules are stated with the table


def test_accuracy_targets_compare_only_rows_trained_alike():
    proto = {"rows": [
        _row("focusnet", 0.9, 0.95), _row("resnet18", 0.8, 0.9),
        _row("focusnet", 0.7, 0.8, options={"saliency": 2}),
        _row("resnet18", 0.99, 0.99, epochs=20),  # another budget: compared with nothing here
        _row("resnet18", 0.5, 0.5, seeds=(0,)),  # other seeds: likewise
        _row("focusnet", 0.6, 0.7, size=64, machine="NVIDIA H200, bf16 autocast, torch 2"), _row("resnet18", 0.5, 0.9, size=64),
    ]}
    targets = {name: (measured, verdict) for name, measured, verdict in report.accuracy_targets(proto)}
    assert targets["synth-lesion (28 px), 10 epochs: FocusNet mean test ACC and AUC >= ResNet-18's"] == ("ACC 0.900 vs 0.800 (+0.100, spread 0.010), AUC 0.950 vs 0.900 (+0.050, spread 0.010)", "met")
    assert targets["synth-lesion (28 px), 10 epochs: FocusNet (saliency=2) mean test ACC and AUC >= ResNet-18's"][1] == "**missed**"
    measured, verdict = targets["synth-lesion (64 px), 10 epochs: FocusNet mean test ACC and AUC >= ResNet-18's"]
    assert verdict == "**missed**" and "(FocusNet on NVIDIA H200, bf16 autocast, ResNet-18 on CPU, fp32)" in measured
    assert len(targets) == 3
    assert report._has_pair(proto, "synth-lesion", 28) and report._has_pair(proto, "synth-lesion", 64)
    assert not report._has_pair(proto, "synth-lesion", 128)


def test_small_cnn_targets_name_the_machines_when_they_differ():
    proto = {"rows": [_row("focusnet", 0.9, 0.95, machine="NVIDIA H100, bf16 autocast, torch 2"), _row("smallcnn", 0.92, 0.97)]}
    [(name, measured, verdict)] = report.accuracy_targets(proto)
    assert name.endswith("FocusNet >= the plain small CNN of similar FLOPs") and verdict == "**missed**"
    assert measured == "ACC 0.900 vs 0.920 (-0.020, spread 0.010), AUC 0.950 vs 0.970 (-0.020, spread 0.010) (FocusNet on NVIDIA H100, bf16 autocast, the small CNN on CPU, fp32)"


def test_what_was_tried_lists_every_configuration_where_the_default_misses():
    proto = {"rows": [
        _row("focusnet", 0.80, 0.90, epochs=50), _row("resnet18", 0.90, 0.95, epochs=50),  # 28 px: missed
        _row("focusnet", 0.88, 0.96, epochs=50, options={"num_saccades": 0}),
        _row("focusnet", 0.70, 0.85, epochs=15, options={"readout": "gated"}),  # no ResNet-18 at 15 epochs
        _row("focusnet", 0.95, 0.99, epochs=50, size=64), _row("resnet18", 0.90, 0.95, epochs=50, size=64),  # 64 px: met
    ]}
    ablations = {"rows": [{**_ablation("1 saccade", (0.85, 0.01), (0.92, 0.01)), "dataset": "synth-lesion", "epochs": 50}]}
    text = report.tried_section(proto, ablations)
    assert "### synth-lesion (28 px)" in text and "(64 px)" not in text  # only where the default misses
    assert "ResNet-18 trained alike: 50 epochs 0.900 / 0.950 (CPU, fp32)." in text
    # (these made-up rows carry no "sample_order": trained before the seeds drew unrelated orders, hence 3*)
    assert "| focusnet (num_saccades=0) | 50 | 3* | 0.880 +/- 0.010 | 0.960 +/- 0.010 | -0.020 / +0.010 | CPU, fp32 |" in text
    assert "| focusnet (readout=gated) | 15 | 3* | 0.700 +/- 0.010 | 0.850 +/- 0.010 | - | CPU, fp32 |" in text
    assert "| ablation: 1 saccade | 50 | 3* | 0.850 +/- 0.010 | 0.920 +/- 0.010 | -0.050 / -0.030 | NVIDIA H100 |" in text
    assert text.endswith("Best against ResNet-18 trained alike at the largest budget compared: focusnet (num_saccades=0), 50 epochs (-0.020 / +0.010).")
    one_seed = {"rows": [*proto["rows"], _row("focusnet", 0.95, 0.99, epochs=50, seeds=(0,), options={"width": 64})]}
    assert "| focusnet (width=64) | 50 | 1 | 0.950 +/- 0.010 | 0.990 +/- 0.010 | - |" in report.tried_section(one_seed, None)  # not trained alike
    assert report.tried_section({"rows": proto["rows"][4:]}, ablations) == ""  # nothing missed: no section


@pytest.fixture
def fake_python(tmp_path):
    """A stand-in for python that logs its arguments and exits with $FAKE_RC."""
    path = tmp_path / "python"
    path.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\nexit "${FAKE_RC:-0}"\n')
    path.chmod(0o755)
    return str(path)


def _queue(fake_python, tmp_path, rc: int = 0, epochs: str = "100", **environment: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": fake_python, "FAKE_RC": str(rc), "JOBS": "3", "OUTPUT_DIR": str(tmp_path / "runs"), "LOG_DIR": str(tmp_path / "logs"), **environment}
    return subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_protocol.sh"), str(tmp_path), epochs], env=env, capture_output=True, text=True, timeout=120)


def test_gpu_queue_reports_every_failed_row(fake_python, tmp_path):
    result = _queue(fake_python, tmp_path, rc=3)
    failed = [line for line in result.stdout.splitlines() if line.startswith("row failed:")]
    assert result.returncode == 1 and len(failed) == 56  # 5 protocol + 15 synthetic-lesion rows + 3 datasets x 12 ablation variants


def test_gpu_queue_passes_whole_variant_names_and_options(fake_python, tmp_path):
    logs = tmp_path / "logs"
    result = _queue(fake_python, tmp_path, rc=0)
    assert result.returncode == 0, result.stdout + result.stderr
    with open(os.path.join(logs, "ablations_synth-lesion_15_0_saccades__glance_only_.log")) as f:
        args = f.read().splitlines()
    assert args[args.index("--variants") + 1] == "0 saccades (glance only)" and args[args.index("--epochs") + 1] == "15"
    with open(os.path.join(logs, "protocol_synth-lesion_128_focusnet___option_fovea_scaling_pixels___option_saliency_2.log")) as f:
        args = f.read().splitlines()
    assert args.count("--option") == 2 and "saliency=2" in args and args[args.index("--output-dir") + 1] == str(tmp_path / "runs")
    assert args[args.index("--epochs") + 1] == "50"  # the synthetic rows keep their own budget; the MedMNIST rows take EPOCHS
    with open(os.path.join(logs, "protocol_pneumoniamnist_28_focusnet.log")) as f:
        args = f.read().splitlines()
    assert args[args.index("--epochs") + 1] == "100"


def test_protocol_rows_record_the_speed_flags_they_ran_with():
    import torch
    import protocol

    cpu = torch.device("cpu")
    assert protocol.machine(cpu, amp=True).startswith("CPU only") and "bf16" not in protocol.machine(cpu, amp=True)  # amp is CUDA's
    named = protocol.machine(cpu, amp=True, amp_cpu=True, channels_last=True)
    assert ", bf16 autocast, channels-last, torch " in named
    assert rows.short_machine(named) == "CPU, bf16 autocast, channels-last"
    assert rows.short_machine(protocol.machine(cpu, amp=False, channels_last=True)) == "CPU, fp32, channels-last"
    assert rows.short_machine(protocol.machine(cpu, amp=False)) == "CPU, fp32"
    plain = _row("focusnet", 0.9, 0.95)  # rows written before the flags existed have no "speed"
    assert protocol.row_key(plain) == protocol.row_key({**plain, "speed": []})
    assert protocol.row_key(plain) != protocol.row_key({**plain, "speed": ["channels_last"]})


def test_protocol_table_shows_the_learned_share_of_gated_readout_rows():
    import protocol

    extra = {"flops_per_image": 7.7e7, "params": 590230, "wall_s": 60.0, "command": "python benchmarks/protocol.py ..."}
    gated = {**_row("focusnet", 0.9, 0.98, epochs=15, options={"readout": "gated"}), **extra, "readout_gate": rows.mean_std([0.1, 0.3])}
    text = protocol.markdown([gated, {**_row("focusnet", 0.8, 0.9, epochs=15), **extra}])
    assert "1: the mean of all steps): focusnet (readout=gated) on synth-lesion (28), 15 epochs: g = 0.200 +/- 0.141." in text
    assert "Gated readout" not in protocol.markdown([{**_row("focusnet", 0.8, 0.9), **extra}])


def test_volume_targets_name_the_3d_baseline_and_a_one_epoch_budget():
    proto = {"rows": [{**_row("focusnet", 0.8, 0.8, epochs=1), "dataset": "adrenalmnist3d"},
                      {**_row("resnet18_3d", 0.7, 0.7, epochs=1), "dataset": "adrenalmnist3d"}]}
    [(name, measured, verdict)] = [t for t in report.accuracy_targets(proto) if "1 epoch:" in t[0]]
    assert name == "adrenalmnist3d (28 px), 1 epoch: FocusNet mean test ACC and AUC >= 3D ResNet-18's"
    assert (measured, verdict) == ("ACC 0.800 vs 0.700 (+0.100, spread 0.010), AUC 0.800 vs 0.700 (+0.100, spread 0.010)", "met")


def _ablation(variant: str, acc: tuple[float, float], auc: tuple[float, float]) -> dict:
    test = {"acc": {"mean": acc[0], "std": acc[1]}, "auc": {"mean": auc[0], "std": auc[1]}}
    return {"dataset": "pneumoniamnist", "epochs": 10, "preset": "official", "seeds": [0, 1, 2], "variant": variant, "test": test, "machine": "NVIDIA H100"}


def test_a_row_folded_from_seed_runs_shows_the_fold_command_alone():
    run = "python benchmarks/protocol.py --datasets synth-lesion --option glance_size=64 --option readout=gated --epochs 15 --seeds {}"
    fold = run.format("0 1 2") + " --extend --output-dir /tmp/runs"
    chain = " && ".join([run.format("1 2") + " --output-dir /tmp/runs --seed-workers 2", run.format("0"), fold])
    assert rows.reproducing_command(chain) == fold
    other_budget = " && ".join([run.format("0").replace("15", "50"), fold])  # the parts differ in more than seeds
    assert rows.reproducing_command(other_budget) == other_budget
    other_option = " && ".join([run.format("0").replace(" --option readout=gated", ""), fold])
    assert rows.reproducing_command(other_option) == other_option
    assert rows.reproducing_command(run.format("0")) == run.format("0")  # one run: itself
    no_fold = " && ".join([run.format("0"), run.format("1")])
    assert rows.reproducing_command(no_fold) == no_fold
    quoted = run.format("{}").replace("--epochs", "--output-dir '/tmp/a && b' --epochs")  # a quoted '&&' is part of its argument
    assert rows.reproducing_command(" && ".join([quoted.format("0"), quoted.format("0 1 2") + " --extend"])) == quoted.format("0 1 2") + " --extend"


def test_unmeasured_names_each_missing_row_and_nothing_once_all_are_there():
    proto = {"rows": [dict(_row(m, 0.8, 0.9, epochs=100), dataset=d) for d in report.PROTOCOL_DATASETS for m in ("focusnet", "resnet18_3d" if d.endswith("3d") else "resnet18")]
             + [_row(m, 0.8, 0.9, size=size, epochs=50) for size in report.SYNTHETIC_SIZES for m in ("focusnet", "resnet18")]}
    ablations = {"rows": [{"dataset": d, "variant": v} for d in report.ABLATION_DATASETS for v in (report.DEFAULT_VARIANT, *report.ABLATION_CHECKS)]}
    assert report.unmeasured(proto, ablations) == []
    no_3d_resnet = {"rows": [r for r in proto["rows"] if r["model"] != "resnet18_3d"]}
    assert report.unmeasured(no_3d_resnet, ablations) == ["the 3D ResNet-18 under the full 100-epoch protocol on adrenalmnist3d"]
    assert "ablations on breastmnist (default, 0 saccades" in "; ".join(report.unmeasured(proto, {"rows": ablations["rows"][:-len(report.ABLATION_CHECKS) - 1]}))


def test_ablation_verdicts_need_a_lead_beyond_the_spread_and_show_it():
    default = _ablation(report.DEFAULT_VARIANT, (0.854, 0.012), (0.9680, 0.0020))
    variants = [_ablation("no saccadic suppression", (0.861, 0.035), (0.9646, 0.0033)),  # AUC lead 0.0034 > 0.0033, but ACC lower
                _ablation("M pathway only", (0.850, 0.035), (0.9646, 0.0033)),  # the same AUC lead, ACC not lower
                _ablation("no predictive coding", (0.853, 0.041), (0.9675, 0.0020)),  # inside the spread
                _ablation("K pathway only", (0.900, 0.010), (0.9690, 0.0020))]  # ACC worse beyond it, AUC worse too
    found = {name.split('"')[1]: (measured, verdict) for name, measured, verdict in report.ablation_targets({"rows": [default, *variants]})}
    assert found["no saccadic suppression"] == (  # was "met" on the AUC lead alone
        "ACC 0.854 vs 0.861 (difference -0.0070, spread 0.0350), AUC 0.968 vs 0.965 (difference +0.0034, spread 0.0033)", report.DISAGREE)
    assert found["M pathway only"][1] == "met"
    assert found["no predictive coding"][1] == report.NOT_SHOWN
    assert found["K pathway only"][1] == "**missed**"


def test_gpu_queue_runs_only_the_rows_matching_only(fake_python, tmp_path):
    result = _queue(fake_python, tmp_path, epochs="50", ONLY="^ablations pneumoniamnist|^protocol synth-lesion 64 resnet18$")
    assert result.returncode == 0, result.stdout + result.stderr
    logs = sorted(os.listdir(tmp_path / "logs"))
    assert len(logs) == 13 and "protocol_synth-lesion_64_resnet18.log" in logs
    assert all(name.startswith("ablations_pneumoniamnist_10_") for name in logs if name != "protocol_synth-lesion_64_resnet18.log")
    with open(tmp_path / "logs" / "protocol_synth-lesion_64_resnet18.log") as f:
        args = f.read().splitlines()
    assert args[args.index("--epochs") + 1] == "50"


def test_a_single_seed_shows_no_spread():
    assert rows.mean_pm_std(rows.mean_std([0.606])) == "0.606 (1 seed)"
    assert rows.mean_pm_std(rows.mean_std([0.8, 0.9, 1.0])) == "0.900 +/- 0.100"


def _trained(seeds, accs, machine="CPU only, 2 cores, torch 2", gates=None) -> dict:
    stats = {"acc": rows.mean_std(accs), "auc": rows.mean_std([a + 0.1 for a in accs])}
    row = {**_row("focusnet", 0, 0, machine=machine, seeds=seeds, options={"readout": "gated"}), "test": stats, "val": stats,
           "best_epochs": [10 + s for s in seeds], "wall_s": 60.0 * len(seeds), "command": f"python benchmarks/protocol.py --seeds {' '.join(map(str, seeds))}",
           "run_folder": f"runs/{seeds[0]}", "flops_per_image": 7.7e7, "params": 590230}
    return {**row, "readout_gate": rows.mean_std(gates)} if gates else row


def test_extending_a_row_pools_the_per_seed_values_in_seed_order():
    merged = rows.merge_seed_rows([_trained([2, 0], [0.7, 0.9], gates=[-0.2, 0.0]), _trained([1], [0.8], gates=[-0.1])])
    assert merged["seeds"] == [0, 1, 2] and merged["best_epochs"] == [10, 11, 12]
    assert merged["test"]["acc"]["values"] == [0.9, 0.8, 0.7] and abs(merged["test"]["acc"]["std"] - 0.1) < 1e-12
    assert abs(merged["val"]["auc"]["mean"] - 0.9) < 1e-12 and merged["readout_gate"]["values"] == [0.0, -0.1, -0.2]
    assert merged["wall_s"] == 180.0 and merged["command"].count("python benchmarks/protocol.py") == 2
    with pytest.raises(ValueError, match="share seeds"):
        rows.merge_seed_rows([_trained([0], [0.9]), _trained([0, 1], [0.9, 0.8])])
    new = {**_trained([1], [0.8]), "sample_order": rows.SAMPLE_ORDER}  # trained since the seeds draw unrelated orders
    assert rows.merge_seed_rows([{**_trained([0], [0.9]), "sample_order": rows.SAMPLE_ORDER}, new])["sample_order"] == rows.SAMPLE_ORDER
    assert "sample_order" not in rows.merge_seed_rows([new, _trained([0], [0.9])])  # one older part: an older row
    assert "2 of the 3 multi-seed rows" in report.seed_order_note({"protocol": {"rows": [_trained([0, 1], [0.9, 0.8]), new, {**new, "seeds": [0, 2]}, _trained([0, 1], [0.9, 0.8])]}})
    assert report.seed_order_note({"protocol": {"rows": [{**new, "seeds": [0, 2]}, _trained([0], [0.9])]}}) == ""  # all new (1 seed: no shared orders)
    assert [rows.seeds_cell(r) for r in (_trained([0, 1], [0.9, 0.8]), {**new, "seeds": [0, 2]}, _trained([0], [0.9]))] == ["2*", "2", "1"]
    with pytest.raises(ValueError, match="different machines"):
        rows.merge_seed_rows([_trained([0], [0.9]), _trained([1], [0.8], machine="NVIDIA H200, bf16 autocast, torch 2")])


def test_extend_picks_disjoint_rows_of_the_same_settings_and_machine():
    import protocol

    cpu = "CPU only, 2 cores, torch 2"
    have = [_trained([0], [0.9]), _trained([1, 2], [0.8, 0.7]), _trained([0, 1], [0.9, 0.8]),  # overlaps the larger [0, 1]
            _trained([3], [0.5]),  # not asked for
            _trained([2], [0.6], machine="NVIDIA H200, bf16 autocast, torch 2"), {**_trained([2], [0.6]), "epochs": 50}]
    wanted = {**_trained([0, 1, 2], [0, 0, 0]), "seeds": [0, 1, 2]}
    assert [p["seeds"] for p in protocol.parts_to_extend(have, wanted, cpu)] == [[1, 2], [0]]
    assert [p["seeds"] for p in protocol.parts_to_extend(have, wanted, "NVIDIA H200, bf16 autocast, torch 2")] == [[2]]


def test_extend_trains_only_the_missing_seeds_and_leaves_one_row(tmp_path, monkeypatch):
    import argparse

    import protocol

    results, cpu = str(tmp_path / "protocol.json"), "CPU only, 2 cores, torch 2"
    monkeypatch.setattr(protocol, "RESULTS", results)
    monkeypatch.setattr(protocol, "MARKDOWN", str(tmp_path / "protocol.md"))
    monkeypatch.setattr(protocol, "config_machine", lambda cfg: cpu)
    trained = []
    monkeypatch.setattr(protocol, "run_row", lambda *a: trained.append(a[6]) or {**_trained(a[6], [0.5] * len(a[6])), "epochs": a[5]})
    seed0 = _trained([0], [0.9])
    rows.append_row(results, seed0, protocol.row_key, protocol.MARKDOWN, str)
    args = argparse.Namespace(size=28, preset="official", epochs=10, seeds=[0, 1, 2], data_dir="", device="cpu", output_dir="", seed_workers=1, extend=True)
    wanted = {**seed0, "seeds": [0, 1, 2]}
    kept = protocol.fill_row(rows.load_rows(results), wanted, "focusnet", args, ())
    assert trained == [[1, 2]] and [r["seeds"] for r in kept] == [[0, 1, 2]] == [r["seeds"] for r in rows.load_rows(results)]
    assert kept[0]["test"]["acc"]["values"] == [0.9, 0.5, 0.5]
    kept = protocol.fill_row(kept, {**wanted, "epochs": 20}, "focusnet", argparse.Namespace(**{**vars(args), "epochs": 20, "extend": False}), ())
    assert trained[-1] == [0, 1, 2] and len(kept) == 2  # without --extend every seed is trained, in a row of its own


def test_gpu_throughput_compile_mode_runs_both_models_compiled_on_the_cpu():
    import torch

    import gpu_throughput

    mode = "bf16 autocast + torch.compile"
    assert mode in gpu_throughput.MODES
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters["stats"]
    before = counters["unique_graphs"]
    try:
        out = gpu_throughput.measure(2, 4, mode, torch.device("cpu"), steps=1, repeats=1, backend="eager")  # dynamo only: the plumbing, quickly
        assert counters["unique_graphs"] >= before + 4  # both models compiled, for training and for inference
    finally:
        torch._dynamo.reset()
    for key in ("train_images_per_s", "inference_images_per_s"):
        assert set(out[key]) == {"FocusNet", "ResNet-18"} and all(v > 0 for v in out[key].values())
    result = {"machine": "m", "command": "c", "case_names": ["2D 28 px, batch 128"], "rows": [out]}
    text = gpu_throughput.markdown(result)
    assert f"| 2D 28 px, batch 128 | {mode} |" in text
    assert "Not measured in this run: 2D 28 px, batch 128, fp32;" in text and f"3D 28^3, batch 32, {mode}." in text
    assert all(v > 0 for key in ("train_warmup_s", "inference_warmup_s") for v in out[key].values())
    assert "- 2D 28 px, batch 128: FocusNet train" in text  # compile's warm-up (compilation) is reported
    # rows are measured mode by mode (compile last) but shown case by case, in MODES order
    fp32_3d = {**out, "dims": 3, "mode": "fp32"}
    text = gpu_throughput.markdown({**result, "case_names": ["3D 28^3, batch 32", "2D 28 px, batch 128"], "rows": [fp32_3d, out]})
    assert text.index(f"| 2D 28 px, batch 128 | {mode} |") < text.index("| 3D 28^3, batch 32 | fp32 |")


def test_scaling_benchmark_takes_medians_and_counts_other_load():
    import time

    import distributed

    before = distributed.busy_cpu_s()
    end = time.perf_counter() + 0.3
    while time.perf_counter() < end:  # this process's own work counts as busy machine time
        pass
    assert distributed.busy_cpu_s() - before >= 0.2
    runs = [{"nproc": n, "images_per_s": rate, "other_cores": other, "peak_private_mib": 10.0 * n, "peak_rss_mib": 20.0}
            for n, rate, other in ((1, 140, 0.0), (2, 240, 0.1), (2, 120, 1.0), (1, 100, 0.9), (1, 144, 0.0), (2, 238, 0.0))]
    one, two = distributed.summarise(runs)
    assert (one["images_per_s"], two["images_per_s"]) == (140, 238) and one["images_per_s_runs"] == [140, 100, 144]
    assert abs(two["efficiency"] - 238 / 280) < 1e-12 and (one["other_cores"], two["other_cores"]) == (0.0, 0.1)
    assert two["peak_private_mib"] == 20.0
