"""Intel RealSense colour camera over pyrealsense2.

Clock: `Frame.capture_time_s` is seconds since the Unix epoch on the host's system clock (the
clock of time.time() and of ROS system time). With global time enabled, librealsense maps each
frame's hardware timestamp into that clock (its time service is the host system clock) while
keeping the device's capture instant; in the system_time domain the stamp is the host arrival
time in the same clock. A frame stamped only in the device's hardware clock (global time not
supported) falls back to its time-of-arrival metadata, else to time.time() at read.

Frame handling (`FrameHandler`) is separate from where frames come from: `read()` takes framesets
from any source with `try_wait_for_frames(timeout_ms)` (an rs.pipeline for the real camera, or
an rs.syncer fed by an rs.software_device in tests and playback), so one code path converts
frames, stamps them and counts drops.
"""

import time
from typing import Optional

import numpy as np

from .base import CameraBackend, CameraStats, Frame


def _rs():
    import pyrealsense2 as rs

    return rs


class FrameHandler:
    """Colour frame (or frameset) -> Frame, counting frame-number gaps as drops."""

    def __init__(self):
        self.stats = CameraStats()
        self.last_frame_number = None
        self.timestamp_domain = None  # name of the last frame's domain, for diagnostics

    def __call__(self, frames) -> Optional[Frame]:
        rs = _rs()
        color = frames
        if frames.is_frameset():
            color = frames.as_frameset().get_color_frame()
            if not color:
                return None
        vf = color.as_video_frame()
        n = int(color.get_frame_number())
        if self.last_frame_number is not None:
            if n > self.last_frame_number + 1:
                self.stats.dropped += n - self.last_frame_number - 1
            # n <= last: the stream restarted (counter reset); nothing to count.
        self.last_frame_number = n

        domain = color.get_frame_timestamp_domain()
        self.timestamp_domain = domain.name
        if domain in (rs.timestamp_domain.global_time, rs.timestamp_domain.system_time):
            t = color.get_timestamp() / 1000.0
        elif color.supports_frame_metadata(rs.frame_metadata_value.time_of_arrival):
            t = color.get_frame_metadata(rs.frame_metadata_value.time_of_arrival) / 1000.0
        else:
            t = time.time()

        h, w = vf.get_height(), vf.get_width()
        # The buffer belongs to librealsense and is recycled: copy it out.
        data = np.asanyarray(vf.get_data())
        fmt = color.get_profile().format()
        if fmt == rs.format.rgb8:
            img = np.array(data, dtype=np.uint8, copy=True).reshape(h, w, 3)
        elif fmt == rs.format.bgr8:
            img = np.ascontiguousarray(np.asarray(data, dtype=np.uint8).reshape(h, w, 3)[..., ::-1])
        else:
            raise ValueError(f"unsupported colour format {fmt}; configure rgb8")
        self.stats.frames += 1
        return Frame(capture_time_s=t, image=img, frame_number=n)


def color_options(exposure_us=0.0, white_balance_k=0.0) -> dict:
    """Colour-sensor options for fixed exposure / white balance (0 = automatic). Auto is set
    explicitly too: the camera keeps a manual setting from an earlier run while powered."""
    opts = {}
    if exposure_us and exposure_us > 0:
        opts.update(enable_auto_exposure=0, exposure=float(exposure_us))
    else:
        opts["enable_auto_exposure"] = 1
    if white_balance_k and white_balance_k > 0:
        opts.update(enable_auto_white_balance=0, white_balance=float(white_balance_k))
    else:
        opts["enable_auto_white_balance"] = 1
    return opts


class RealSenseCamera(CameraBackend):
    """One RealSense colour stream (rgb8), selected by serial number.

    color_options: {option name: value} set on the colour sensor before streaming, e.g.
    {"enable_auto_exposure": 0, "exposure": 166, "enable_auto_white_balance": 0} so images look
    the same in demonstrations and deployment.
    """

    def __init__(self, serial: Optional[str] = None, width=640, height=480, fps=30, global_time=True,
                 color_options=None):
        self.serial = serial
        self.width, self.height, self.fps = int(width), int(height), int(fps)
        self.global_time = bool(global_time)
        self.color_options = dict(color_options or {})
        self._handler = FrameHandler()
        self._pipeline = None
        self._source = None
        self.global_time_supported = None
        self.applied_options = {}   # what start() set on the colour sensor (for episode metadata)

    @property
    def stats(self) -> CameraStats:
        s = self._handler.stats
        return CameraStats(frames=s.frames, dropped=s.dropped)

    @property
    def timestamp_domain(self):
        return self._handler.timestamp_domain

    def start(self):
        rs = _rs()
        pipeline = rs.pipeline()
        cfg = rs.config()
        if self.serial:
            cfg.enable_device(str(self.serial))
        cfg.enable_stream(rs.stream.color, self.width, self.height, rs.format.rgb8, self.fps)
        try:
            device = cfg.resolve(rs.pipeline_wrapper(pipeline)).get_device()
        except RuntimeError as e:
            raise RuntimeError(
                f"RealSense {self.serial or '(any)'} with colour {self.width}x{self.height}@{self.fps} rgb8 "
                f"not available: {e}; connected: {[c['serial'] for c in list_cameras()]}"
            ) from e
        # Global time is a per-sensor option; set it wherever the device offers it.
        self.global_time_supported = False
        for sensor in device.query_sensors():
            if sensor.supports(rs.option.global_time_enabled):
                sensor.set_option(rs.option.global_time_enabled, 1.0 if self.global_time else 0.0)
                self.global_time_supported = True
        if self.color_options:
            self.applied_options = apply_options(device.first_color_sensor(), self.color_options,
                                                 f"RealSense {self.serial or '(any)'}")
        pipeline.start(cfg)
        self._pipeline = pipeline
        self._source = pipeline

    def restart(self):
        """Stop and reopen the pipeline (after a USB hiccup, a firmware hang)."""
        self.stop()
        self.start()

    def attach(self, source):
        """Stream from an already running source with try_wait_for_frames(timeout_ms), e.g. an
        rs.syncer fed by a software device, instead of opening a pipeline."""
        self._source = source

    def read(self, timeout_s: float) -> Optional[Frame]:
        if self._source is None:
            raise RuntimeError("camera not started")
        ok, frames = self._source.try_wait_for_frames(max(0, int(round(timeout_s * 1000))))
        if not ok:
            return None
        return self._handler(frames)

    def stop(self):
        if self._pipeline is not None:
            try:
                self._pipeline.stop()
            except RuntimeError:
                pass  # already stopped
        self._pipeline = None
        self._source = None


def apply_options(sensor, options: dict, what: str) -> dict:
    """Set {option name: value} on a sensor in order, refusing unknown options and values out of
    the sensor's range with the option's name; returns what the sensor reports back."""
    rs = _rs()
    applied = {}
    for name, value in options.items():
        option = getattr(rs.option, name, None)
        if option is None or not sensor.supports(option):
            raise RuntimeError(f"{what}: the colour sensor has no option {name!r}")
        r = sensor.get_option_range(option)
        if not r.min <= float(value) <= r.max:
            raise ValueError(f"{what}: {name} {value} outside the sensor's range [{r.min}, {r.max}]")
        sensor.set_option(option, float(value))
        applied[name] = sensor.get_option(option)
    return applied


def list_cameras():
    """Connected RealSense devices: [{'serial', 'name', 'firmware', 'usb'}]."""
    rs = _rs()
    out = []
    for dev in rs.context().query_devices():
        def info(key):
            return dev.get_info(key) if dev.supports(key) else ""

        out.append({
            "serial": info(rs.camera_info.serial_number),
            "name": info(rs.camera_info.name),
            "firmware": info(rs.camera_info.firmware_version),
            "usb": info(rs.camera_info.usb_type_descriptor),
        })
    return out
