"""Chat templates written for the tests, in the styles of real model families: they render
``tools``, assistant ``tool_calls`` and ``tool`` results the way those families do, and one
opens a think block in its generation prompt (as DeepSeek R1 / Qwen3 templates do)."""
from __future__ import annotations

# Hermes / Qwen 2.5 style: tools listed in the system turn, calls in <tool_call> blocks.
HERMES_TEMPLATE = r"""
{%- if tools -%}
<|im_start|>system
{% if messages[0].role == 'system' %}{{ messages[0].content }}

{% endif %}# Tools
You may call functions. Signatures inside <tools></tools>:
<tools>
{% for tool in tools %}{{ tool | tojson }}
{% endfor %}</tools>
Return each call as <tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call><|im_end|>
{% elif messages[0].role == 'system' -%}
<|im_start|>system
{{ messages[0].content }}<|im_end|>
{% endif -%}
{%- for message in messages -%}
{%- if message.role == 'system' -%}
{%- elif message.role == 'assistant' and message.tool_calls -%}
<|im_start|>assistant
{% if message.content %}{{ message.content }}
{% endif %}{% for call in message.tool_calls %}<tool_call>
{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments | tojson }}}
</tool_call>{% endfor %}<|im_end|>
{% elif message.role == 'tool' -%}
<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% else -%}
<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
<|im_start|>assistant
{% endif -%}
"""

# Llama 3.1 style: tools in the first user turn, calls as a bare JSON object, results as ipython.
LLAMA3_TEMPLATE = r"""
{%- for message in messages -%}
<|start_header_id|>{{ 'ipython' if message.role == 'tool' else message.role }}<|end_header_id|>

{% if tools and loop.first %}Given the following functions, respond with a JSON for a function call with its proper arguments, as {"name": function name, "parameters": dictionary of argument name and its value}.
{% for tool in tools %}{{ tool | tojson }}
{% endfor %}
{% endif -%}
{%- if message.tool_calls -%}
{%- for call in message.tool_calls %}{"name": "{{ call.function.name }}", "parameters": {{ call.function.arguments | tojson }}}{% endfor -%}
{%- else -%}{{ message.content }}{%- endif -%}
<|eot_id|>
{%- endfor -%}
{%- if add_generation_prompt -%}<|start_header_id|>assistant<|end_header_id|>

{% endif -%}
"""

# Mistral style: [AVAILABLE_TOOLS] before the last user turn, calls after [TOOL_CALLS].
MISTRAL_TEMPLATE = r"""
{%- if tools %}[AVAILABLE_TOOLS]{{ tools | tojson }}[/AVAILABLE_TOOLS]{% endif -%}
{%- for message in messages -%}
{%- if message.role == 'user' -%}
[INST]{{ message.content }}[/INST]
{%- elif message.role == 'assistant' and message.tool_calls -%}
[TOOL_CALLS]{{ message.tool_calls | map(attribute='function') | list | tojson }}</s>
{%- elif message.role == 'tool' -%}
[TOOL_RESULTS]{{ message.content }}[/TOOL_RESULTS]
{%- elif message.role == 'assistant' -%}
{{ message.content }}</s>
{%- else -%}
{{ message.content }}
{%- endif -%}
{%- endfor -%}
"""

# A reasoning template: the generation prompt opens <think> unless enable_thinking is false.
THINK_TEMPLATE = r"""
{%- for message in messages -%}
<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endfor -%}
{%- if add_generation_prompt -%}
<|im_start|>assistant
{% if enable_thinking is not defined or enable_thinking %}<think>
{% endif -%}
{%- endif -%}
"""
