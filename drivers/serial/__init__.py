"""Serial sensors: pure decoders (card readers, MAC sniffers), their registry and the port transport."""

from drivers.serial.base import DecodedFrame, DecodeStats, SerialDecoder
from drivers.serial.config import SerialSensorConfig
from drivers.serial.registry import FORMATS, FormatInfo, format_info, make_decoder
from drivers.serial.transport import PortStatus, ReadingQueue, SerialSensor

__all__ = [
    "FORMATS",
    "DecodeStats",
    "DecodedFrame",
    "FormatInfo",
    "PortStatus",
    "ReadingQueue",
    "SerialDecoder",
    "SerialSensor",
    "SerialSensorConfig",
    "format_info",
    "make_decoder",
]
