"""Structured output compared (issue #24): free decoding, constrained diffusion (dgemma.json_schema) and
autoregressive decoding of the same weights under the same per-position mask, on SCHEMAS.

    python -m dgemma.bench.structured --save structured
"""

from __future__ import annotations

SCHEMAS = [  # varied shapes: flat, nested, arrays, enums, bounded numbers, unions
    {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}, "required": ["name"]},
    {"type": "object", "properties": {"ok": {"type": "boolean"}}},
    {"type": "object", "properties": {"x": {"type": "number"}, "y": {"type": "number"}}},
    {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]}}},
    {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 10}}},
    {"type": "object", "properties": {"t": {"type": "number", "minimum": -1.5, "maximum": 2.5}}},
    {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string", "maxLength": 8},
                                               "maxItems": 3}}},
    {"type": "object", "properties": {"xs": {"type": "array", "items": {"type": "integer"}, "minItems": 2,
                                             "maxItems": 4}}},
    {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 99}, "minItems": 1, "maxItems": 5},
    {"type": "object", "properties": {"user": {"type": "object", "properties": {
        "id": {"type": "integer"}, "email": {"type": "string", "maxLength": 20}}}}},
    {"type": "object", "properties": {"points": {"type": "array", "items": {
        "type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}}}, "minItems": 2,
        "maxItems": 2}}},
    {"type": "object", "properties": {"note": {"type": ["string", "null"], "maxLength": 10}}},
    {"type": "object", "properties": {"v": {"type": ["integer", "null"]}, "w": {"type": ["boolean", "string"]}}},
    {"type": "object", "properties": {"kind": {"const": "point"}, "at": {"type": "array", "items": {"type": "number"},
                                                                          "minItems": 2, "maxItems": 2}}},
    {"type": "object", "properties": {"level": {"enum": [1, 2, 3]}, "mode": {"enum": ["fast", "exact", None]}}},
    {"type": "string", "maxLength": 12},
    {"type": "integer", "minimum": -50, "maximum": 50},
    {"enum": ["yes", "no"]},
    {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "object", "properties": {
        "c": {"type": "integer"}}}}}}},
    {"type": "object", "title": "Function", "description": "a function call",
     "properties": {"name": {"enum": ["add", "mul"]}, "args": {"type": "array", "items": {"type": "integer"},
                                                               "maxItems": 3}},
     "required": ["name", "args"], "additionalProperties": False},
    {"type": "object", "properties": {"empty": {"type": "object", "properties": {}}, "none": {"type": "null"},
                                      "flags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 2}}},
    {"type": "object", "properties": {"rows": {"type": "array", "items": {"type": "array", "items": {
        "type": "integer", "minimum": 0, "maximum": 9}, "minItems": 3, "maxItems": 3}, "minItems": 2, "maxItems": 2}}},
]
