"""The config file's JSON Schema, from the same pydantic models that validate it (titles, descriptions, defaults,
patterns; the `rules` and `sinks` unions as the registries assemble them), for YAML editors to complete and check."""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from plugin.config.root import Config

DIALECT = "https://json-schema.org/draft/2020-12/schema"
# The loader expands ${VAR} after reading the YAML, so a number, a switch or a constrained string (a token's minimum
# length, an id's pattern) may be written as a reference (`port: ${MQTT_PORT}`, `token: "${POS_TOKEN}"`): the
# schema lets one stand wherever such a value goes.
ENV_REFERENCE: JsonSchemaValue = {
    "type": "string",
    "pattern": r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}$",
    "description": "an environment reference, replaced when the config is read",
}


class _FileSchema(GenerateJsonSchema):
    """pydantic's generator, with `${VAR}` allowed in place of numbers, booleans and constrained strings."""

    def int_schema(self, schema: core_schema.IntSchema) -> JsonSchemaValue:
        """An integer, or a reference to one."""
        return {"anyOf": [super().int_schema(schema), ENV_REFERENCE]}

    def float_schema(self, schema: core_schema.FloatSchema) -> JsonSchemaValue:
        """A number, or a reference to one."""
        return {"anyOf": [super().float_schema(schema), ENV_REFERENCE]}

    def bool_schema(self, schema: core_schema.BoolSchema) -> JsonSchemaValue:
        """A boolean, or a reference to one."""
        return {"anyOf": [super().bool_schema(schema), ENV_REFERENCE]}

    def str_schema(self, schema: core_schema.StringSchema) -> JsonSchemaValue:
        """A string; one with a length or pattern to meet may be a reference (checked once expanded)."""
        plain = super().str_schema(schema)
        constrained = any(key in plain for key in ("minLength", "maxLength", "pattern"))
        return {"anyOf": [plain, ENV_REFERENCE]} if constrained else plain


def config_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a StoreSight config file."""
    schema = Config.model_json_schema(schema_generator=_FileSchema)
    return {
        "$schema": DIALECT,
        **schema,
        "title": "StoreSight configuration",
        "description": "One store's bridge: cameras, zones, rules, sinks and business inputs (docs/configuration.md).",
    }
