import json


from dp_ros.policy import bench


def test_bench_prints_one_json_object(capsys):
    assert bench.main(["inference", "--preset", "tiny", "--repeats", "2", "--warmup", "0",
                       "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["preset"] == "tiny" and out["device"] == "cpu"
    p = out["params"]
    assert p["total"] == p["encoder"] + p["noise_net"] > 0
    for k in ("encoder_ms", "denoise_step_ms", "predict_action_ms"):
        assert set(out[k]) == {"median", "p90", "max"}


def test_presets_match_the_paper_set_up():
    real = bench.PRESETS["paper-real"]
    assert real["cameras"] == {"camera0": [240, 320], "camera1": [240, 320]}
    assert real["crop"] == [216, 288] and real["down_dims"] == [512, 1024, 2048]
    assert bench.PRESETS["sim"]["crop"] == [84, 84]


def test_bench_a_checkpoint_with_pytorchs_conv_path_beside(capsys, tmp_path):
    from dp_ros.policy.unet import Conv1d
    from dp_ros.policy.untrained import make_untrained_checkpoint
    ckpt = make_untrained_checkpoint(tmp_path / "ckpt", tiny=True)
    assert bench.main(["inference", "--checkpoint", str(ckpt), "--repeats", "2", "--warmup", "0",
                       "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["checkpoint"] == str(ckpt) and out["preset"] is None
    assert set(out["pytorch_conv1d"]) == {"denoise_step_ms", "predict_action_ms"}   # the ratio's other side
    assert all(v > 0 for v in out["pytorch_conv1d"].values())
    assert Conv1d.fast_batch1                                                     # switched back
