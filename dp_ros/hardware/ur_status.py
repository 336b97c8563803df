"""What the UR controller's status words mean, and which of them forbid moving the arm.

Values and bit numbers are the RTDE guide's (and ur_rtde's enums): `safety_mode`,
`safety_status_bits`, `robot_status_bits`, `runtime_state`, `robot_mode`. Shared by the
backends (ur_rtde_backend.py) and the controller emulator (dp_ros/testing/)."""

from typing import Optional

# safety_mode
SAFETY_MODE = {1: "normal", 2: "reduced", 3: "protective stop", 4: "recovery", 5: "safeguard stop",
               6: "system emergency stop", 7: "robot emergency stop", 8: "violation", 9: "fault",
               10: "validate joint id", 11: "undefined safety mode", 12: "automatic mode safeguard stop",
               13: "three-position enabling stop"}
SAFETY_NORMAL, SAFETY_REDUCED, SAFETY_PROTECTIVE_STOP = 1, 2, 3
SAFETY_SYSTEM_ESTOP, SAFETY_ROBOT_ESTOP = 6, 7

# safety_status_bits (bit numbers)
BIT_NORMAL_MODE, BIT_REDUCED_MODE, BIT_PROTECTIVE_STOPPED, BIT_RECOVERY_MODE = 0, 1, 2, 3
BIT_SAFEGUARD_STOPPED, BIT_SYSTEM_ESTOPPED, BIT_ROBOT_ESTOPPED, BIT_EMERGENCY_STOPPED = 4, 5, 6, 7
BIT_VIOLATION, BIT_FAULT, BIT_STOPPED_DUE_TO_SAFETY = 8, 9, 10

# robot_status_bits
BIT_POWER_ON, BIT_PROGRAM_RUNNING = 0, 1

# runtime_state
RUNTIME_STATE = {0: "stopping", 1: "stopped", 2: "playing", 3: "pausing", 4: "paused", 5: "resuming"}
RUNTIME_STOPPED, RUNTIME_PLAYING, RUNTIME_PAUSED = 1, 2, 4

# robot_mode
ROBOT_MODE = {-1: "no controller", 0: "disconnected", 1: "confirm safety", 2: "booting", 3: "power off",
              4: "power on", 5: "idle", 6: "backdrive", 7: "running", 8: "updating firmware"}
ROBOT_MODE_RUNNING = 7

_SAFETY_BITS = [  # (bit, reason), most severe first
    (BIT_EMERGENCY_STOPPED, "emergency stop"),
    (BIT_ROBOT_ESTOPPED, "robot emergency stop"),
    (BIT_SYSTEM_ESTOPPED, "system emergency stop"),
    (BIT_PROTECTIVE_STOPPED, "protective stop"),
    (BIT_SAFEGUARD_STOPPED, "safeguard stop"),
    (BIT_VIOLATION, "safety violation"),
    (BIT_FAULT, "safety fault"),
    (BIT_RECOVERY_MODE, "recovery mode (joint outside its limits)"),
]


def bit(word: int, n: int) -> bool:
    return bool((int(word) >> n) & 1)


def safety_fault(safety_mode: Optional[int] = None, safety_status_bits: Optional[int] = None) -> Optional[str]:
    """The reason the safety system stops the arm, or None when it may move."""
    if safety_status_bits is not None:
        for n, reason in _SAFETY_BITS:
            if bit(safety_status_bits, n):
                return reason
    if safety_mode is not None and int(safety_mode) not in (SAFETY_NORMAL, SAFETY_REDUCED):
        return SAFETY_MODE.get(int(safety_mode), f"safety mode {int(safety_mode)}")
    return None


def controller_fault(safety_mode=None, safety_status_bits=None, robot_mode=None, robot_status_bits=None,
                     runtime_state=None, need_program=False) -> Optional[str]:
    """Why the arm cannot follow commands: safety stop first, then power, then (when a control
    program must run, need_program) the program state. None when all is well."""
    reason = safety_fault(safety_mode, safety_status_bits)
    if reason:
        return reason
    if robot_mode is not None and int(robot_mode) != ROBOT_MODE_RUNNING:
        return f"robot mode {ROBOT_MODE.get(int(robot_mode), int(robot_mode))} (arm not powered / brakes engaged)"
    if need_program:
        if robot_status_bits is not None and not bit(robot_status_bits, BIT_PROGRAM_RUNNING):
            state = RUNTIME_STATE.get(int(runtime_state), runtime_state) if runtime_state is not None else "?"
            return f"control program not running (runtime state {state})"
        if runtime_state is not None and int(runtime_state) != RUNTIME_PLAYING:
            return f"control program {RUNTIME_STATE.get(int(runtime_state), int(runtime_state))}"
    return None
