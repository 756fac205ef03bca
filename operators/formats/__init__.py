"""The formats family: conversions of common post-training formats into the canonical records."""

from dataflow.operators.formats.chat import ToConversation
from dataflow.operators.formats.records import ConversationPrompt, ToPreference, ToPrompt

__all__ = ["ConversationPrompt", "ToConversation", "ToPreference", "ToPrompt"]
