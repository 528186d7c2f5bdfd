#!/usr/bin/env python3
"""Golden renderings of chat templates, made with transformers' own Jinja code (dev-only tool).

Run from the repository root with the oracle virtualenv (transformers + jinja2 + gguf):

    .venv-oracle/bin/python tools/make_chat_template_fixtures.py [path/to/SmolLM2-135M-Instruct.Q4_1.gguf]

It writes ``Tests/DPOTests/Fixtures/chat_templates/cases.json`` (and, when the GGUF is given or found at
``.cache/models/``, refreshes ``templates/smollm2.jinja`` from its ``tokenizer.chat_template`` key).

What is rendered and how
------------------------
* Model templates: every ``templates/*.jinja`` file (the real templates of SmolLM2, Llama 3.1, Llama 3.2,
  Qwen2.5, Zephyr/TinyLlama and Mistral-Instruct v0.1 / v0.3 / Nemo; README.md says where each comes from)
  over a set of conversations (system or not, single and multi-turn, generation prompt on and off, special
  characters, tools and tool calls, and the error cases). Rendering goes through
  ``transformers.utils.chat_template_utils.render_jinja_template`` after ``_normalize_chat_messages``,
  exactly what ``PreTrainedTokenizerBase.apply_chat_template(tokenize=False)`` does, with the special tokens
  passed as template keyword arguments (as ``apply_chat_template`` does from ``special_tokens_map``).
* Micro-templates: one or a few per supported construct, rendered by ``_compile_jinja_template(t).render``
  (transformers' sandboxed environment: trim_blocks, lstrip_blocks, its tojson, raise_exception,
  strftime_now, namespace, loop controls).
* Normalization cases: messages with None-valued keys and reasoning fields through
  ``render_like_apply_chat_template`` and a template printing ``messages|tojson`` (what the template sees).
* ``strftime_now`` sees a fixed clock (``FIXED_NOW``): the module's ``datetime`` is replaced by a subclass
  whose ``now()`` returns it.
* Error cases record the Python exception type and message. ``must_contain`` lists words the Swift error
  message must contain (the exception message of ``raise_exception``, or the name and line:column of an
  unsupported construct). ``unsupported`` marks constructs jinja2 accepts but swift-dpo deliberately
  refuses (macros, ...): for those, the Swift side must fail with a message naming them.
"""

import datetime as _dt
import json
import os
import sys

import jinja2
import transformers
from transformers.utils import chat_template_utils as ctu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE_DIR = os.path.join(ROOT, "Tests", "DPOTests", "Fixtures", "chat_templates")
TEMPLATE_DIR = os.path.join(FIXTURE_DIR, "templates")

FIXED_NOW = _dt.datetime(2025, 3, 7, 14, 5, 9)


class _FixedDatetime(_dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return FIXED_NOW


ctu.datetime = _FixedDatetime


def smollm2_template(gguf_path):
    import gguf

    reader = gguf.GGUFReader(gguf_path)
    field = reader.fields["tokenizer.chat_template"]
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def render_like_apply_chat_template(template, messages, add_generation_prompt, special_tokens, tools, extra):
    conversation = ctu._normalize_chat_messages(messages)
    kwargs = dict(special_tokens)
    kwargs.update(extra)
    rendered, _ = ctu.render_jinja_template(
        conversations=[conversation],
        tools=tools,
        documents=None,
        chat_template=template,
        add_generation_prompt=add_generation_prompt,
        **kwargs,
    )
    return rendered[0]


def outcome(fn):
    try:
        return {"output": fn()}
    except Exception as e:  # the expected errors
        return {"error": {"python_type": type(e).__name__, "python_message": str(e)}}


# --- Conversations --------------------------------------------------------------------------------

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
U1 = {"role": "user", "content": "Hello!"}
A1 = {"role": "assistant", "content": "Hi there, how can I help?"}
U2 = {"role": "user", "content": "What is 2 + 2?"}
A2 = {"role": "assistant", "content": "4"}
SPECIAL = {
    "role": "user",
    "content": "  Quotes ' and \" and \\ backslash\nnew line\r\nCRLF\ttab {{ not a tag }} {% if %} <|im_end|>"
    " unicode: é ß ñ 中文 🚀 \u2028 end  ",
}
SPECIAL_ANSWER = {"role": "assistant", "content": "\n\n  Sure: 'single' \"double\" — done.\n\n"}

PLAIN_CONVERSATIONS = {
    "user": [U1],
    "system_user": [SYSTEM, U1],
    "multi_turn": [U1, A1, U2],
    "system_multi_turn": [SYSTEM, U1, A1, U2, A2],
    "special_characters": [SPECIAL, SPECIAL_ANSWER, U2],
    "system_special": [{"role": "system", "content": "  Be brief.\n"}, SPECIAL],
    "empty_content": [{"role": "user", "content": ""}],
    "two_users": [U1, U2],
    "assistant_first": [A1, U1],
}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city, e.g. \"Paris\".",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "The city name"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7.5},
            },
            "required": ["city"],
        },
        "return": {"type": "number"},
    },
}

TOOL_CALL_CONVERSATION = [
    SYSTEM,
    {"role": "user", "content": "What's the weather in Zürich?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call12345",
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Zürich", "unit": "celsius", "days": 2}},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call12345", "name": "get_weather", "content": "{\"temperature\": 21.5}"},
    {"role": "assistant", "content": "It is 21.5 °C."},
    {"role": "user", "content": "Thanks"},
]

SPECIAL_TOKENS = {
    "smollm2": {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"},
    "llama-3.1": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "llama-3.2": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "qwen2.5": {"eos_token": "<|im_end|>"},  # Qwen2.5 has no BOS token
    "zephyr": {"bos_token": "<s>", "eos_token": "</s>"},
    "mistral-v0.1": {"bos_token": "<s>", "eos_token": "</s>"},
    "mistral-v0.3": {"bos_token": "<s>", "eos_token": "</s>"},
    "mistral-nemo": {"bos_token": "<s>", "eos_token": "</s>"},
}

# Extra cases per template: (case name, messages, tools, extra template kwargs)
EXTRA_CASES = {
    "llama-3.1": [
        ("tools_in_user_message", TOOL_CALL_CONVERSATION, [WEATHER_TOOL], {}),
        ("tools_in_system", TOOL_CALL_CONVERSATION, [WEATHER_TOOL], {"tools_in_user_message": False}),
        ("builtin_tools_date", [SYSTEM, U1], None, {"builtin_tools": ["brave_search", "code_interpreter", "wolfram_alpha"], "date_string": "01 Jan 2030"}),
        ("tools_without_user", [SYSTEM], [WEATHER_TOOL], {}),
    ],
    "llama-3.2": [
        ("tools_in_user_message", TOOL_CALL_CONVERSATION, [WEATHER_TOOL], {}),
        ("date_string", [U1], None, {"date_string": "31 Dec 1999"}),
    ],
    "qwen2.5": [
        ("tools", TOOL_CALL_CONVERSATION, [WEATHER_TOOL], {}),
        ("tools_no_system", TOOL_CALL_CONVERSATION[1:], [WEATHER_TOOL], {}),
    ],
    "mistral-v0.3": [
        ("tools", [SYSTEM] + [m for m in TOOL_CALL_CONVERSATION[1:]], [WEATHER_TOOL], {}),
    ],
    "mistral-nemo": [
        ("tools", TOOL_CALL_CONVERSATION, [WEATHER_TOOL], {}),
        ("bad_tool_call_id", [U1, {"role": "assistant", "tool_calls": [{"id": "short", "type": "function", "function": {"name": "f", "arguments": {}}}]}], None, {}),
    ],
}


def model_cases():
    path_args = sys.argv[1:]
    gguf_path = path_args[0] if path_args else os.path.join(ROOT, ".cache", "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
    if os.path.exists(gguf_path):
        with open(os.path.join(TEMPLATE_DIR, "smollm2.jinja"), "w", encoding="utf-8", newline="") as f:
            f.write(smollm2_template(gguf_path))
    cases = []
    for file in sorted(os.listdir(TEMPLATE_DIR)):
        if not file.endswith(".jinja"):
            continue
        name = file[: -len(".jinja")]
        with open(os.path.join(TEMPLATE_DIR, file), encoding="utf-8", newline="") as f:
            template = f.read()
        specials = SPECIAL_TOKENS[name]
        runs = [(k, v, None, {}) for k, v in PLAIN_CONVERSATIONS.items()] + EXTRA_CASES.get(name, [])
        for case, messages, tools, extra in runs:
            for agp in (False, True):
                result = outcome(lambda: render_like_apply_chat_template(template, messages, agp, specials, tools, extra))
                entry = {
                    "template": name,
                    "case": case,
                    "messages": messages,
                    "add_generation_prompt": agp,
                    "bos_token": specials.get("bos_token"),
                    "eos_token": specials.get("eos_token"),
                    "tools": tools,
                    "extra": extra,
                }
                entry.update(result)
                if "error" in result:
                    entry["must_contain"] = [result["error"]["python_message"]]
                cases.append(entry)
    return cases


# --- Micro-templates --------------------------------------------------------------------------------

# (name, template, context). Each renders with transformers' environment.
MICRO = [
    # text, whitespace control, trim_blocks / lstrip_blocks, comments
    ("text_only", "Hello, world!", {}),
    ("trailing_newline_dropped", "line\n", {}),
    ("crlf_source", "a\r\nb\rc\n{% if true %}\r\nx\r\n{% endif %}\r\n", {}),
    ("trim_blocks", "{% if true %}\nyes\n{% endif %}\nafter", {}),
    ("lstrip_blocks", "  {% if true %}\n    x\n  {% endif %}\n  y", {}),
    ("lstrip_tabs", "\t {% for i in [1, 2] %}\n\t{{ i }}\n\t{% endfor %}\n", {}),
    ("lstrip_not_for_variables", "  {{ 1 }}\n  {% if true %}a{% endif %}", {}),
    ("lstrip_mid_line_not", "x  {% if true %}a{% endif %}  y", {}),
    ("strip_minus", "a   {{- 'b' -}}   c\n\n  {%- if true -%}  d  {%- endif -%}\n e", {}),
    ("strip_plus", "  {%+ if true %}\nkeep{% endif +%}\nnext", {}),
    ("comments", "a {# comment #} b\n  {# own line #}\nc {#- strip -#} d", {}),
    ("comment_multiline", "x{#\nmulti\nline {{ not }} {% parsed %}\n#}\ny", {}),
    ("variable_end_no_trim", "{{ 'a' }}\nb", {}),
    ("strip_unicode_spaces", "a\u3000\u00a0 {{- 'b' }}", {}),
    # literals and output formatting (Python str())
    ("literals", "{{ 1 }} {{ -2 }} {{ 1.5 }} {{ 1e3 }} {{ 0x1F }} {{ 1_000 }} {{ true }} {{ True }} {{ none }} {{ None }} {{ 'a' \"b\" }}", {}),
    ("floats_repr", "{{ 0.1 + 0.2 }} {{ 1e16 }} {{ 1e-5 }} {{ 2.0 }} {{ 123456789012345.6 }} {{ 1/3 }} {{ 10/2 }} {{ 1e100 }}", {}),
    ("lists_repr", "{{ [1, 'a', \"it's\", none, true, 1.0, [2], {'k': 'v'}] }}", {}),
    ("dict_repr", "{{ {'a': 1, 'b': [1, 2], 'c': {'d': none}} }}", {}),
    ("tuple_repr", "{{ (1, 'x') }} {{ (1,) }} {{ () }}", {}),
    ("string_escapes", "{{ 'a\\nb\\tc\\\\d\\'e\\\"f\\x41\\u00e9\\U0001F600\\q' }}", {}),
    ("repr_quotes", "{{ [\"it's\", 'say \"hi\"', 'both \\' \"', 'nl\\n', 'tab\\t', '\\x01', 'é'] }}", {}),
    ("undefined_renders_empty", "[{{ missing }}][{{ missing is defined }}]", {}),
    ("context_values", "{{ s }} {{ i }} {{ f }} {{ b }} {{ n }} {{ l }} {{ d }}", {"s": "str", "i": 42, "f": 2.5, "b": False, "n": None, "l": [1, "x"], "d": {"k": [1]}}),
    # operators
    ("arithmetic", "{{ 7 + 3 }} {{ 7 - 3 }} {{ 7 * 3 }} {{ 7 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 7.5 // 2 }} {{ -7.5 % 2 }}", {}),
    ("precedence", "{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 2 ** 3 ** 2 }} {{ -2 ** 2 }} {{ 10 - 2 - 3 }} {{ 'x' ~ 2 * 3 }} {{ 'a' ~ (1 + 2) }}", {}),
    ("string_concat", "{{ 'a' + 'b' }} {{ 'a' ~ 1 ~ none ~ true ~ 1.0 ~ [1] }} {{ 'ab' * 3 }} {{ [1] + [2, 3] }}", {}),
    ("comparisons", "{{ 1 < 2 }} {{ 2 <= 2 }} {{ 3 > 4 }} {{ 'a' < 'b' }} {{ 1 == 1.0 }} {{ 1 == true }} {{ 'a' != 'b' }} {{ [1, 2] == [1, 2] }} {{ {'a': 1, 'b': 2} == {'b': 2, 'a': 1} }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ [1, 2] < [1, 3] }}", {}),
    ("in_operator", "{{ 'a' in 'cat' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 'z' not in 'cat' }} {{ 3 not in [1] }} {{ 'x' in missing }}", {}),
    ("logic", "{{ true and false }} {{ true or false }} {{ not true }} {{ not 0 }} {{ 0 or 'x' }} {{ '' and 'y' }} {{ 'a' and 'b' }} {{ none or [] }} {{ not not 'a' }} {{ not 1 == 2 }}", {}),
    ("ternary", "{{ 'yes' if true else 'no' }} {{ 'yes' if 0 else 'no' }} [{{ 'only' if false }}] {{ 1 if x is defined else 2 }}", {}),
    ("truthiness", "{% for v in [0, 1, '', 'a', [], [0], {}, {'a': 1}, none, 0.0, 0.5] %}{{ 'T' if v else 'F' }}{% endfor %}", {}),
    ("unary", "{{ -(3) }} {{ +3 }} {{ - -3 }} {{ -1.5 }}", {}),
    # access
    ("attribute_subscript", "{{ m.role }} {{ m['content'] }} {{ m.get('role') }} {{ m.get('nope', 'dflt') }} {{ l[0] }} {{ l[-1] }} {{ l.1 }} {{ 'abc'[1] }} {{ 'abc'[-1] }} {{ n.a.b }}", {"m": {"role": "user", "content": "hi"}, "l": [10, 20, 30], "n": {"a": {"b": "deep"}}}),
    ("slicing", "{{ l[1:] }} {{ l[:2] }} {{ l[::-1] }} {{ l[-2:] }} {{ l[1:3] }} {{ l[::2] }} {{ 'hello'[1:4] }} {{ 'hello'[::-1] }} {{ l[5:] }} {{ l[:-1] }} {{ 'héllo'[1:3] }}", {"l": [1, 2, 3, 4]}),
    ("missing_key_undefined", "[{{ m.nope }}][{{ m['nope'] }}][{{ l[10] is defined }}]", {"m": {"a": 1}, "l": [1]}),
    ("dict_methods", "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %} {{ d.keys()|list }} {{ d.values()|list }} {% for k in d %}{{ k }}{% endfor %}", {"d": {"z": 1, "a": 2, "m": [3]}}),
    ("method_attribute_wins", "{{ d.items is defined }} {{ d['items'] }}", {"d": {"items": "value"}}),
    # string methods
    ("string_methods", "[{{ s.strip() }}][{{ s.lstrip() }}][{{ s.rstrip() }}][{{ 'xxhixx'.strip('x') }}][{{ s.upper() }}][{{ s.lower() }}][{{ 'hello world'.title() }}][{{ 'hELLO'.capitalize() }}]", {"s": "  Hi There \n"}),
    ("string_predicates", "{{ s.startswith('<think>') }} {{ s.endswith('</think>') }} {{ s.startswith(('a', '<')) }} {{ s.find('x') }} {{ s.find('>') }} {{ s.count('t') }}", {"s": "<think>text</think>"}),
    ("string_split", "{{ 'a,b,,c'.split(',') }} {{ '  a  b \n c '.split() }} {{ 'a b c'.split(' ', 1) }} {{ 'x</think>y</think>z'.split('</think>')[-1] }} {{ 'a\\nb\\r\\nc'.splitlines() }} {{ 'a-b-c'.rsplit('-', 1) }}", {}),
    ("string_replace_join", "{{ 'aaa'.replace('a', 'b') }} {{ 'aaa'.replace('a', 'b', 2) }} {{ ', '.join(['x', 'y']) }} {{ 'abc'.replace('', '-') }}", {}),
    ("string_misc_methods", "{{ 'Hello'.lower().startswith('he') }} {{ 'abc'.index('c') }} {{ 'a1'.isalnum() }} {{ '12'.isdigit() }} {{ '  '.isspace() }} {{ 'ABC'.isupper() }} {{ 'abc'.islower() }} {{ 'prefix-x'.removeprefix('prefix-') }} {{ 'x.txt'.removesuffix('.txt') }} {{ 'a\\n'.rstrip('\\n') }}", {}),
    # statements
    ("for_loop_vars", "{% for x in ['a', 'b', 'c'] %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.previtem }}{{ loop.nextitem }}|{% endfor %}", {}),
    ("for_else", "{% for x in [] %}{{ x }}{% else %}empty{% endfor %} {% for x in missing %}{{ x }}{% else %}undef{% endfor %}", {}),
    ("for_filter", "{% for x in range(10) if x % 3 == 0 %}{{ x }}:{{ loop.index }}/{{ loop.length }} {% endfor %}", {}),
    ("for_unpack", "{% for a, b in [[1, 2], (3, 4)] %}{{ a }}{{ b }}{% endfor %} {% for (k, v) in {'x': 1}|items %}{{ k }}{{ v }}{% endfor %}", {}),
    ("for_nested_loop", "{% for a in [1, 2] %}{% for b in 'xy' %}{{ loop.index }}{{ a }}{{ b }} {% endfor %}{{ loop.index }};{% endfor %}", {}),
    ("for_string_dict", "{% for c in 'hé' %}[{{ c }}]{% endfor %}{% for k in {'b': 1, 'a': 2} %}{{ k }}{% endfor %}", {}),
    ("for_cycle", "{% for x in range(5) %}{{ loop.cycle('odd', 'even') }} {% endfor %}", {}),
    ("break_continue", "{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}{% endif %}{{ x }}{% endfor %}", {}),
    ("range_forms", "{{ range(3)|list }} {{ range(1, 4)|list }} {{ range(10, 0, -3)|list }} {{ range(0)|list }}", {}),
    ("if_elif_else", "{% for v in [1, 2, 3] %}{% if v == 1 %}one{% elif v == 2 %}two{% else %}other{% endif %} {% endfor %}", {}),
    ("set_scoping", "{% set x = 1 %}{% for i in [1, 2] %}{% set x = i * 10 %}{{ x }} {% endfor %}{{ x }} {% if true %}{% set y = 5 %}{% endif %}{{ y }}", {}),
    ("set_iteration_fresh", "{% for i in [1, 2] %}[{{ z }}]{% set z = i %}{% endfor %}", {}),
    ("set_tuple", "{% set a, b = [1, 2] %}{{ a }}{{ b }} {% set c = 1, 2 %}{{ c }}", {}),
    ("set_block", "{% set block %}\n  Hello {{ name }}!\n{% endset %}[{{ block }}] {% set t | upper %}x{{ 1 }}{% endset %}{{ t }}", {"name": "Bob"}),
    ("namespace", "{% set ns = namespace(count=0, found=false) %}{% for x in [1, 2, 3] %}{% set ns.count = ns.count + x %}{% if x == 2 %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.count }} {{ ns.found }} {{ ns.missing is defined }}", {}),
    ("namespace_empty_then_set", "{% set ns = namespace() %}{% set ns.index = 0 %}{% for m in ['a', 'b'] %}{% set ns.index = ns.index + 1 %}{% endfor %}{{ ns.index }}", {}),
    ("messages_reassign", "{% set messages = messages[1:] %}{% for m in messages %}{{ m.role }}{% endfor %}", {"messages": [{"role": "system"}, {"role": "user"}, {"role": "assistant"}]}),
    ("generation_block", "{% for m in ['a', 'b'] %}{% generation %}<{{ m }}>{% endgeneration %}{% endfor %}", {}),
    ("raise_not_reached", "{% if false %}{{ raise_exception('never') }}{% endif %}ok", {}),
    ("strftime_now", "{{ strftime_now('%d %b %Y') }}|{{ strftime_now('%Y-%m-%d %H:%M:%S %A %B %j %p %I %y %a %%') }}", {}),
    ("dict_global", "{{ dict(a=1, b='x') }} {{ dict(a=1).a }}", {}),
    # filters
    ("filter_trim", "[{{ s|trim }}] [{{ 'xxaxx'|trim('x') }}] [{{ none|trim }}] [{{ missing|trim }}]", {"s": " \t pad \n"}),
    ("filter_length", "{{ 'héllo'|length }} {{ [1, 2]|length }} {{ {'a': 1}|length }} {{ missing|length }} {{ 'abc'|count }}", {}),
    ("filter_tojson", "{{ v|tojson }} | {{ 'a\"b\\\\c\\n\\u00e9\\u2028\\x7f'|tojson }} | {{ none|tojson }} {{ true|tojson }} {{ 1.0|tojson }} {{ 1e20|tojson }} {{ [] |tojson }} {{ {}|tojson }}", {"v": {"b": [1, 2.5, None, True, "é"], "a": {"c": "d"}}}),
    ("filter_tojson_indent", "{{ v|tojson(indent=4) }}\n{{ v|tojson(indent=2, sort_keys=true) }}\n{{ [1, [], {}]|tojson(indent=1) }}", {"v": {"z": [1, {"y": None}], "a": "b"}}),
    ("filter_tojson_separators", "{{ v|tojson(separators=(',', ':')) }} {{ 'ü'|tojson(ensure_ascii=true) }}", {"v": {"a": [1, 2]}}),
    ("filter_case", "{{ 'hello WORLD'|upper }} {{ 'HeLLo'|lower }} {{ 'hELLO world'|capitalize }} {{ 'hello big-world (x)'|title }} {{ 'straße'|upper }}", {}),
    ("filter_replace", "{{ 'a-b-c'|replace('-', '+') }} {{ 'a-b-c'|replace('-', '', 1) }}", {}),
    ("filter_join", "{{ ['a', 'b']|join }} {{ [1, 2, 3]|join(', ') }} {{ users|join(', ', attribute='name') }}", {"users": [{"name": "x"}, {"name": "y"}]}),
    ("filter_first_last", "{{ [1, 2, 3]|first }} {{ [1, 2, 3]|last }} {{ 'abc'|first }} {{ 'abc'|last }} [{{ []|first }}]", {}),
    ("filter_default", "{{ missing|default('d') }} {{ none|default('d') }} {{ ''|default('d', true) }} {{ 'v'|d('d') }} {{ 0|default(5, boolean=true) }}", {}),
    ("filter_list", "{{ 'abc'|list }} {{ {'a': 1, 'b': 2}|list }} {{ (1, 2)|list }} {{ missing|list }}", {}),
    ("filter_select_reject_attr", "{{ ms|selectattr('role', 'equalto', 'user')|list|length }} {{ ms|rejectattr('role', 'equalto', 'user')|map(attribute='content')|list }} {{ ms|selectattr('tool_calls', 'undefined')|list|length }} {{ ms|selectattr('tool_calls', 'defined')|map(attribute='role')|join }} {{ ms|selectattr('content')|list|length }} {{ ms[1:2]|selectattr('tool_calls.0.id', 'eq', 'x1')|list|length }}", {"ms": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "", "tool_calls": [{"id": "x1"}]}, {"role": "user", "content": "b"}]}),
    ("filter_select_reject", "{{ [1, 2, 3, 4]|select('odd')|list }} {{ [1, 2, 3, 4]|reject('odd')|list }} {{ [0, 1, '', 'a']|select|list }} {{ [1, 5, 10]|select('gt', 3)|list }} {{ ['a', 1, none]|reject('string')|list }}", {}),
    ("filter_map", "{{ ['a', 'B']|map('upper')|list }} {{ [{'n': 1}, {'m': 2}]|map(attribute='n', default=0)|list }} {{ [' a ', 'b ']|map('trim')|join('|') }} {{ [[1, 2], [3]]|map('length')|list }}", {}),
    ("filter_items", "{% for k, v in d|items %}{{ k }}:{{ v }} {% endfor %}{{ d|items|list }} [{{ missing|items|list }}]", {"d": {"b": 1, "a": 2}}),
    ("filter_string_int_float", "{{ 5|string }} {{ [1, 'a']|string }} {{ '42'|int + 1 }} {{ '3.5'|float }} {{ 'x'|int }} {{ 'x'|int(7) }} {{ 3.9|int }} {{ 2|float }} {{ '0x1A'|int(0, 16) }} {{ true|int }}", {}),
    ("filter_misc", "{{ -3|abs }} {{ [3, 1, 2]|sort }} {{ [3, 1, 2]|sort(reverse=true) }} {{ ['b', 'A', 'c']|sort }} {{ [1, 2]|reverse|list }} {{ 'abc'|reverse }} {{ [1, 2, 1]|unique|list }} {{ [1, 2, 3]|sum }} {{ [3, 1]|min }} {{ [3, 1]|max }} {{ 2.567|round(2) }} {{ 2.5|round }} {{ {'b': 1, 'a': 2}|dictsort }}", {}),
    ("filter_sort_attribute", "{{ us|sort(attribute='age')|map(attribute='name')|join(',') }}", {"us": [{"name": "a", "age": 3}, {"name": "b", "age": 1}]}),
    ("filter_indent", "{{ 'a\\nb\\n\\nc'|indent(2) }}|{{ 'a\\nb'|indent(2, true) }}|{{ 'a\\n\\nb'|indent(4, blank=true) }}", {}),
    ("filter_chain_precedence", "{{ 'a' + ' b '|trim + 'c' }} {{ -2|abs }} {{ [1,2]|length + 1 }} {{ ('ab' ~ 'c')|upper }}", {}),
    ("filter_safe_wordcount", "{{ '<b>'|safe }} {{ 'a b  c'|wordcount }}", {}),
    # tests
    ("tests_types", "{{ 'a' is string }} {{ 1 is string }} {{ {} is mapping }} {{ [] is mapping }} {{ [] is iterable }} {{ 'a' is iterable }} {{ 1 is iterable }} {{ 1 is number }} {{ 1.5 is float }} {{ 1 is integer }} {{ true is integer }} {{ true is boolean }} {{ none is none }} {{ 0 is none }} {{ [] is sequence }} {{ 'a' is sequence }} {{ 1 is sequence }} {{ x is callable }} {{ raise_exception is callable }}", {"x": 1}),
    ("tests_defined", "{{ x is defined }} {{ y is defined }} {{ y is undefined }} {{ x is not defined }} {{ m.a is defined }} {{ m.b is defined }}", {"x": None, "m": {"a": 1}}),
    ("tests_values", "{{ 3 is odd }} {{ 3 is even }} {{ 9 is divisibleby 3 }} {{ 9 is divisibleby(2) }} {{ 1 is eq 1 }} {{ 1 is equalto 2 }} {{ 2 is gt 1 }} {{ 2 is ge 2 }} {{ 1 is lt 1 }} {{ 1 is le 1 }} {{ 1 is ne 2 }} {{ 2 is in [1, 2] }} {{ 'a' is lower }} {{ 'A' is upper }} {{ true is true }} {{ 1 is true }} {{ false is false }} {{ none is sameas none }}", {}),
    # real-template idioms
    ("idiom_last_query_index", "{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}\n{%- for message in messages[::-1] %}\n    {%- set index = (messages|length - 1) - loop.index0 %}\n    {%- if ns.multi_step_tool and message.role == \"user\" and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}\n        {%- set ns.multi_step_tool = false %}\n        {%- set ns.last_query_index = index %}\n    {%- endif %}\n{%- endfor %}\n{{- ns.last_query_index }}", {"messages": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a"}, {"role": "user", "content": "<tool_response>r</tool_response>"}]}),
    ("idiom_think_split", "{%- set content = m.content %}{%- if '</think>' in content %}{%- set reasoning = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}{%- set content = content.split('</think>')[-1].lstrip('\\n') %}{%- endif %}[{{ reasoning }}][{{ content }}]", {"m": {"content": "<think>\nhmm\n</think>\n\nanswer"}}),
    ("idiom_dict_literal_tojson", "{{ {\"name\": f.name, \"arguments\": f.arguments, \"id\": 'x'}|tojson }} {{ (f|tojson)[:-1] }}", {"f": {"name": "n", "arguments": {"a": 1}}}),
    ("idiom_loop_filter_items", "{%- for key, val in tool.items() if key != \"return\" %}{{ key }}{% if not loop.last %},{% endif %}{% endfor %}", {"tool": {"name": "n", "return": 1, "description": "d"}}),
    ("large_output_loop", "{% for i in range(200) %}{{ i }},{% endfor %}", {}),
]

# Templates jinja2 may accept or reject but swift-dpo must refuse with a precise error:
# (name, template, context, words the Swift error must contain)
MICRO_ERRORS = [
    ("unknown_filter", "ab\n  {{ x|frobnicate }}", {"x": 1}, ["frobnicate", "2:"]),
    ("unknown_test", "{% if x is frobnicated %}{% endif %}", {"x": 1}, ["frobnicated", "1:"]),
    ("macro_unsupported", "{% macro m(a) %}{{ a }}{% endmacro %}{{ m(1) }}", {}, ["macro", "1:1"]),
    ("include_unsupported", "x\n{% include 'other.html' %}", {}, ["include", "2:1"]),
    ("raise_exception", "{% if x %}{{ raise_exception('Bad thing: ' ~ x) }}{% endif %}ok", {"x": "boom"}, ["Bad thing: boom"]),
    ("raise_exception_message", "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}", {}, ["Conversation roles must alternate user/assistant/user/assistant/..."]),
    ("unclosed_if", "{% if true %}never closed", {}, ["endif"]),
    ("unclosed_variable", "a {{ x ", {}, ["1:"]),
    ("unexpected_endfor", "{% endfor %}", {}, ["endfor", "1:1"]),
    ("bad_expression", "{{ 1 + }}", {}, ["1:"]),
    ("unknown_method", "{{ 'a'.frob() }}", {}, ["frob"]),
    ("call_undefined", "{{ nothing() }}", {}, ["nothing"]),
    ("add_none_string", "{{ none + 'a' }}", {}, ["1:"]),
    ("attribute_of_undefined", "{{ missing.attr }}", {}, ["missing"]),
    ("tojson_undefined", "{{ missing|tojson }}", {}, ["tojson"]),
    ("divide_by_zero", "{{ 1 / 0 }}", {}, ["zero"]),
    ("items_of_list", "{{ [1]|items }}", {}, ["items"]),
    ("unknown_statement", "{% frobnicate %}", {}, ["frobnicate", "1:1"]),
    ("concat_binds_tighter_than_plus", "{{ 'a' ~ 1 + 2 }}", {}, ["1:"]),
    ("bad_string_escape_unterminated", "{{ 'abc }}", {}, ["1:"]),
]


def micro_cases():
    cases = []
    for name, template, context in MICRO:
        entry = {"name": name, "template": template, "context": context}
        result = outcome(lambda: ctu._compile_jinja_template(template).render(**context))
        if "error" in result:
            raise SystemExit(f"micro-template {name} failed in jinja2: {result['error']}")
        entry.update(result)
        cases.append(entry)
    for name, template, context, words in MICRO_ERRORS:
        entry = {"name": name, "template": template, "context": context, "must_contain": words}
        result = outcome(lambda: ctu._compile_jinja_template(template).render(**context))
        if "error" in result:
            entry.update(result)
        else:
            entry["unsupported"] = True
            entry["jinja2_output"] = result["output"]
        cases.append(entry)
    return cases


# Messages as apply_chat_template hands them to the template (None-valued keys dropped, reasoning aliased),
# seen through a template that prints them.
NORMALIZATION_TEMPLATE = "{{ messages|tojson }}|{{ add_generation_prompt }}|{{ tools }}|{{ documents }}|{{ bos_token }}"
NORMALIZATION_MESSAGES = [
    [{"role": "user", "content": "hi", "name": None}],
    [{"role": "assistant", "content": "ok", "reasoning_content": "because", "tool_calls": None}],
    [{"role": "assistant", "reasoning": "r1", "content": "x"}],
    [{"role": "assistant", "thinking": "t0", "reasoning_content": None, "content": "y"}],
    [{"role": "assistant", "content": "z", "thinking": "own", "reasoning": "r2"}],
]


def normalization_cases():
    cases = []
    for messages in NORMALIZATION_MESSAGES:
        out = render_like_apply_chat_template(NORMALIZATION_TEMPLATE, messages, True, {"bos_token": "<s>"}, None, {})
        cases.append({"template": NORMALIZATION_TEMPLATE, "messages": messages, "bos_token": "<s>", "output": out})
    return cases


def main():
    data = {
        "normalization_cases": normalization_cases(),
        "generator": "tools/make_chat_template_fixtures.py",
        "versions": {"transformers": transformers.__version__, "jinja2": jinja2.__version__},
        "fixed_now": FIXED_NOW.isoformat(),
        "model_cases": model_cases(),
        "micro_cases": micro_cases(),
    }
    path = os.path.join(FIXTURE_DIR, "cases.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=1)
        f.write("\n")
    n_err = sum(1 for c in data["model_cases"] if "error" in c)
    print(f"wrote {path}: {len(data['model_cases'])} model cases ({n_err} errors), {len(data['micro_cases'])} micro cases")


if __name__ == "__main__":
    main()
