"""clarion: a Kafka-native notification engine built on faust-streaming."""

__version__ = "0.1.0"
