"""RealSense frame path through pyrealsense2 itself, without a camera: frames injected into a
software device's colour sensor come out of an rs.syncer into RealSenseCamera.read(), the same
conversion/stamping/drop-counting code the pipeline feeds. (pyrealsense2 2.59: a software device
added to a context with add_to() is not listed by query_devices(), so rs.pipeline cannot open it;
the syncer is the way in.)"""

import time

import numpy as np
import pytest

rs = pytest.importorskip("pyrealsense2")

from dp_ros.hardware.realsense import RealSenseCamera, list_cameras  # noqa: E402

W, H = 32, 24


@pytest.fixture
def software_camera():
    dev = rs.software_device()
    sensor = dev.add_sensor("RGB Camera")
    vs = rs.video_stream()
    vs.type, vs.index, vs.uid = rs.stream.color, 0, 0
    vs.width, vs.height, vs.fps, vs.bpp, vs.fmt = W, H, 30, 3, rs.format.rgb8
    intr = rs.intrinsics()
    intr.width, intr.height = W, H
    vs.intrinsics = intr
    profile = sensor.add_video_stream(vs)
    syncer = rs.syncer()
    sensor.open(profile)
    sensor.start(syncer)
    cam = RealSenseCamera(width=W, height=H, fps=30)
    cam.attach(syncer)
    keep = []

    def inject(n, ts_ms, domain=rs.timestamp_domain.global_time):
        img = np.random.default_rng(n).integers(0, 255, (H, W, 3), dtype=np.uint8)
        f = rs.software_video_frame()
        f.pixels = img
        keep.append(img)
        f.bpp, f.stride = 3, W * 3
        f.timestamp, f.domain, f.frame_number = ts_ms, domain, n
        f.profile = profile.as_video_stream_profile()
        sensor.on_video_frame(f)
        return img

    yield cam, inject
    cam.stop()
    sensor.stop()
    sensor.close()


def test_frames_stamps_and_drops(software_camera):
    cam, inject = software_camera
    t0 = time.time() * 1000.0
    got = []
    for k, n in enumerate([1, 2, 5, 6, 9]):
        img = inject(n, t0 + 33.3 * n)
        f = cam.read(1.0)
        assert f is not None
        np.testing.assert_array_equal(f.image, img)
        assert f.image.dtype == np.uint8 and f.image.shape == (H, W, 3)
        assert f.frame_number == n
        assert f.capture_time_s == pytest.approx((t0 + 33.3 * n) / 1000.0, abs=1e-6)
        got.append((f, img))
    for f, img in got:  # copies: later frames must not overwrite earlier ones
        np.testing.assert_array_equal(f.image, img)
    assert cam.stats.frames == 5
    assert cam.stats.dropped == 2 + 2  # 3, 4 and 7, 8 never arrived
    assert cam.timestamp_domain == "global_time"


def test_hardware_clock_falls_back_to_host_time(software_camera):
    cam, inject = software_camera
    inject(1, 123.0, domain=rs.timestamp_domain.hardware_clock)
    f = cam.read(1.0)
    assert abs(f.capture_time_s - time.time()) < 1.0


def test_read_times_out_with_none(software_camera):
    cam, _ = software_camera
    t = time.monotonic()
    assert cam.read(0.05) is None
    assert time.monotonic() - t < 1.0


def test_list_cameras_returns_list():
    cams = list_cameras()
    assert isinstance(cams, list)
    for c in cams:
        assert set(c) == {"serial", "name", "firmware", "usb"}


def test_exposure_and_white_balance_options_are_applied_and_checked():
    from dp_ros.hardware.realsense import apply_options, color_options

    assert color_options(0, 0) == {"enable_auto_exposure": 1, "enable_auto_white_balance": 1}
    opts = color_options(exposure_us=300, white_balance_k=4600)
    assert list(opts) == ["enable_auto_exposure", "exposure", "enable_auto_white_balance", "white_balance"]
    sensor = rs.software_device().add_sensor("RGB Camera")
    # option_range(min, max, step, default) as pyrealsense2 2.59 orders it: (min, max, default, step)
    sensor.add_option(rs.option.enable_auto_exposure, rs.option_range(0, 1, 1, 1), True)
    sensor.add_option(rs.option.exposure, rs.option_range(1, 10000, 166, 1), True)
    sensor.add_option(rs.option.enable_auto_white_balance, rs.option_range(0, 1, 1, 1), True)
    sensor.add_option(rs.option.white_balance, rs.option_range(2800, 6500, 4600, 1), True)
    applied = apply_options(sensor, opts, "test camera")
    assert applied == {"enable_auto_exposure": 0, "exposure": 300, "enable_auto_white_balance": 0,
                       "white_balance": 4600}
    with pytest.raises(ValueError, match="white_balance 9000.*range"):
        apply_options(sensor, color_options(300, 9000), "test camera")
    with pytest.raises(RuntimeError, match="no option 'gain'"):
        apply_options(sensor, {"gain": 16}, "test camera")
