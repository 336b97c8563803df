"""UR's RTDE wire format (protocol version 2), as published in UR's "Real-Time Data Exchange
(RTDE) Guide": a 3-byte header (uint16 size including the header, uint8 type), big-endian
payloads, recipes as comma-separated variable names answered with comma-separated type names."""

import struct

HEADER = struct.Struct(">HB")

# package types (ASCII letters)
REQUEST_PROTOCOL_VERSION = ord("V")
GET_URCONTROL_VERSION = ord("v")
TEXT_MESSAGE = ord("M")
DATA_PACKAGE = ord("U")
SETUP_OUTPUTS = ord("O")
SETUP_INPUTS = ord("I")
START = ord("S")
PAUSE = ord("P")

# struct codes of the RTDE types
TYPE_FORMAT = {
    "BOOL": "?", "UINT8": "B", "UINT32": "I", "UINT64": "Q", "INT32": "i", "DOUBLE": "d",
    "VECTOR3D": "3d", "VECTOR6D": "6d", "VECTOR6INT32": "6i", "VECTOR6UINT32": "6I",
}

_OUTPUT_TYPES = {
    "DOUBLE": ["timestamp", "actual_execution_time", "speed_scaling", "target_speed_fraction", "actual_momentum",
               "actual_main_voltage", "actual_robot_voltage", "actual_robot_current", "standard_analog_input0",
               "standard_analog_input1", "standard_analog_output0", "standard_analog_output1", "payload",
               "tool_analog_input0", "tool_analog_input1", "tool_output_current", "tool_temperature"],
    "VECTOR6D": ["target_q", "target_qd", "target_qdd", "target_current", "target_moment", "actual_q", "actual_qd",
                 "actual_current", "joint_control_output", "actual_TCP_pose", "actual_TCP_speed", "actual_TCP_force",
                 "target_TCP_pose", "target_TCP_speed", "joint_temperatures", "actual_joint_voltage",
                 "ft_raw_wrench", "payload_inertia", "tcp_offset"],
    "VECTOR3D": ["actual_tool_accelerometer", "payload_cog", "elbow_position", "elbow_velocity"],
    "UINT64": ["actual_digital_input_bits", "actual_digital_output_bits"],
    "INT32": ["robot_mode", "safety_mode", "tool_mode", "tool_output_voltage"],
    "UINT32": ["runtime_state", "robot_status_bits", "safety_status_bits", "analog_io_types", "io_current"],
    "VECTOR6INT32": ["joint_mode"],
}
OUTPUT_TYPES = {name: t for t, names in _OUTPUT_TYPES.items() for name in names}

INPUT_TYPES = {
    "speed_slider_mask": "UINT32", "speed_slider_fraction": "DOUBLE",
    "standard_digital_output_mask": "UINT8", "standard_digital_output": "UINT8",
    "configurable_digital_output_mask": "UINT8", "configurable_digital_output": "UINT8",
    "tool_digital_output_mask": "UINT8", "tool_digital_output": "UINT8",
    "standard_analog_output_mask": "UINT8", "standard_analog_output_type": "UINT8",
    "standard_analog_output_0": "DOUBLE", "standard_analog_output_1": "DOUBLE",
}
N_REGISTERS = 48  # 0-23 for external clients, 24-47 the "upper range"


def register_type(name: str):
    """RTDE type of an input/output register name, or None."""
    for prefix, kind in (("int_register_", "INT32"), ("double_register_", "DOUBLE"), ("bit_register_", "BOOL")):
        for side in ("input_", "output_"):
            if name.startswith(side + prefix):
                index = name[len(side + prefix):]
                limit = 128 if kind == "BOOL" else N_REGISTERS
                if index.isdigit() and int(index) < limit:
                    return kind
    return None


def output_type(name: str):
    return OUTPUT_TYPES.get(name) or register_type(name)


def input_type(name: str):
    if name.startswith("input_"):
        return register_type(name)
    return INPUT_TYPES.get(name)


def recipe_struct(types) -> struct.Struct:
    return struct.Struct(">" + "".join(TYPE_FORMAT[t] for t in types))


def pack(kind: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(HEADER.size + len(payload), kind) + payload


def flatten(values):
    """Recipe values (scalars and sequences) -> a flat list for struct.pack."""
    out = []
    for v in values:
        if isinstance(v, (list, tuple)):
            out.extend(v)
        else:
            out.append(v)
    return out


def unflatten(types, flat):
    """Inverse of flatten for one recipe."""
    out, i = [], 0
    for t in types:
        code = TYPE_FORMAT[t]
        n = int(code[:-1]) if len(code) > 1 else 1
        out.append(tuple(flat[i:i + n]) if n > 1 else flat[i])
        i += n
    return out
