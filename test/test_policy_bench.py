import json

import pytest
import torch

from dp_ros.policy import bench


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny tensors on a shared 2-core machine: OpenMP threads only contend (10-100x slower).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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
