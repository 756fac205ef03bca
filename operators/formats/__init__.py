"""The formats family: conversions of common post-training formats into the canonical records."""

from dataflow.operators.formats.chat import ToConversation
from dataflow.operators.formats.records import ToPreference, ToPrompt

__all__ = ["ToConversation", "ToPreference", "ToPrompt"]
