"""Pictures of what happened: progress bars, rollout videos and contact sheets, episode figures,
rerun recordings, training curves. ROS-free (numpy, cv2, PyAV, matplotlib; rerun-sdk only for the .rrd),
so the runners, the converter and the trainer can all use it."""
