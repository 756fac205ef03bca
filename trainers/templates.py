"""Assistant-only loss needs ``{% generation %}`` markers around the assistant turns of the chat
template. TRL patches the templates it knows; for any other template with one header and one ending
per turn (ChatML and most others, e.g. SmolLM2's) the marked template is derived here by rendering
probe conversations, and used only when it renders every probe exactly as the original does."""

from __future__ import annotations

from dataflow.errors import DataflowError

PROBES = [
    [{"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"}],
    [{"role": "system", "content": "S1"}, {"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"},
     {"role": "user", "content": "U2"}, {"role": "assistant", "content": "A2"}],
]


def has_markers(template: str | None) -> bool:
    return bool(template) and "generation" in template and "endgeneration" in template


def training_template(tokenizer, model: str) -> str | None:
    """A chat template with generation markers for ``tokenizer``, or None when its own has them."""
    if has_markers(tokenizer.chat_template):
        return None
    from trl.chat_template_utils import get_training_chat_template

    try:
        return get_training_chat_template(tokenizer)
    except ValueError:  # a template TRL does not know
        pass
    marked = _derived_template(tokenizer)
    if marked is None or any(_render(tokenizer, p, marked) != _render(tokenizer, p) for p in PROBES):
        raise DataflowError(f"the chat template of {model} has no {{% generation %}} markers and none could be "
                            f"derived, so the assistant turns cannot be told apart for the loss; set "
                            f"assistant_only_loss=false (train on whole conversations) or give the model a "
                            f"template with the markers")
    return marked


def _render(tokenizer, messages, template=None, generation_prompt=False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, chat_template=template,
                                         add_generation_prompt=generation_prompt)


def _derived_template(tokenizer) -> str | None:
    """The template as default system text + per-role header and ending, from the original's renderings."""
    system = _render(tokenizer, [{"role": "system", "content": "\x01"}])
    if system.count("\x01") != 1:
        return None
    parts = {"system": system.split("\x01")}
    for role in ("user", "assistant", "tool"):
        try:
            text = _render(tokenizer, [{"role": "system", "content": "\x01"}, {"role": role, "content": "\x02"}])
        except Exception:  # a template may refuse a role (tool turns), and says so when rendering it
            text = ""
        if text.startswith(system) and text.count("\x02") == 1:
            parts[role] = text[len(system):].split("\x02")
        elif role != "tool":
            return None
    lone_user = _render(tokenizer, [{"role": "user", "content": "\x02"}])
    user_turn = "\x02".join(parts["user"])
    if not lone_user.endswith(user_turn):
        return None
    default_system = lone_user[:-len(user_turn)]
    prompt_turn = _render(tokenizer, [{"role": "user", "content": "\x02"}], generation_prompt=True)
    if prompt_turn != lone_user + parts["assistant"][0]:
        return None
    header, ending = {r: repr(p[0]) for r, p in parts.items()}, {r: repr(p[1]) for r, p in parts.items()}
    tool = (f"{{{{ {header['tool']} + message['content'] + {ending['tool']} }}}}" if "tool" in parts
            else "{{ raise_exception('this chat template has no tool turns') }}")
    return (
        "{%- for message in messages -%}"
        f"{{%- if loop.first and message['role'] != 'system' -%}}{{{{ {default_system!r} }}}}{{%- endif -%}}"
        "{%- if message['role'] == 'assistant' -%}"
        f"{{{{ {header['assistant']} }}}}{{% generation %}}{{{{ message['content'] + {ending['assistant']} }}}}"
        "{% endgeneration %}"
        "{%- elif message['role'] == 'tool' -%}"
        f"{tool}"
        "{%- elif message['role'] == 'system' -%}"
        f"{{{{ {header['system']} + message['content'] + {ending['system']} }}}}"
        "{%- else -%}"
        f"{{{{ {header['user']} + message['content'] + {ending['user']} }}}}"
        "{%- endif -%}"
        "{%- endfor -%}"
        f"{{%- if add_generation_prompt -%}}{{{{ {header['assistant']} }}}}{{%- endif -%}}"
    )
