"""Which tree-sitter grammar serves a document, and what its node types mean to us.

Grammars come from the individual `tree-sitter-<lang>` wheels, imported lazily on first use, so
nothing is ever downloaded at run time and a session that only edits Go never loads the C++ parser.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import lru_cache

from tree_sitter import Language, Parser

LANGUAGES = ("python", "javascript", "typescript", "tsx", "go", "rust", "java", "c", "cpp")

_LSP_IDS = {
    "python": "python",
    "javascript": "javascript",
    "javascriptreact": "javascript",  # the JavaScript grammar parses JSX itself
    "typescript": "typescript",
    "typescriptreact": "tsx",
    "tsx": "tsx",
    "go": "go",
    "rust": "rust",
    "java": "java",
    "c": "c",
    "cpp": "cpp",
    "cuda-cpp": "cpp",
}

_EXTENSIONS = {
    ".py": "python", ".pyi": "python", ".pyw": "python",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".mts": "typescript", ".cts": "typescript",
    ".tsx": "tsx",
    ".go": "go",
    ".rs": "rust",
    ".java": "java",
    ".c": "c", ".h": "c",  # a .h file is C unless the editor says otherwise (languageId wins)
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".c++": "cpp", ".hpp": "cpp", ".hh": "cpp",
    ".hxx": "cpp", ".h++": "cpp", ".ipp": "cpp", ".inl": "cpp", ".cu": "cpp", ".cuh": "cpp",
}

# grammar name -> (module, function returning the language pointer)
_GRAMMARS = {
    "python": ("tree_sitter_python", "language"),
    "javascript": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "tsx": ("tree_sitter_typescript", "language_tsx"),
    "go": ("tree_sitter_go", "language"),
    "rust": ("tree_sitter_rust", "language"),
    "java": ("tree_sitter_java", "language"),
    "c": ("tree_sitter_c", "language"),
    "cpp": ("tree_sitter_cpp", "language"),
}


def language_for(language_id: str | None, path: str | None) -> str | None:
    """Grammar name for an LSP languageId, else for the path's (or URI's) extension; None if unknown."""
    if language_id:
        name = _LSP_IDS.get(language_id.strip().lower())
        if name:
            return name
    if path:
        base = path.split("?", 1)[0].split("#", 1)[0]
        base = base.replace("\\", "/").rsplit("/", 1)[-1]
        dot = base.rfind(".")
        if dot >= 0:
            return _EXTENSIONS.get(base[dot:].lower())
    return None


@lru_cache(maxsize=None)
def grammar(name: str) -> Language:
    module_name, function = _GRAMMARS[name]
    module = importlib.import_module(module_name)
    return Language(getattr(module, function)())


def new_parser(name: str) -> Parser:
    return Parser(grammar(name))


@dataclass(frozen=True)
class LanguageSpec:
    """Node types of one grammar, grouped by the role they play in building context."""

    name: str
    # nodes whose header lines form the scope chain (class/function/impl…)
    scope_types: frozenset[str]
    # a node whose parent is one of these is a statement: a clean place to start or end a window
    statement_parents: frozenset[str]
    # file-level import-like lines (import/use/#include; package lines too, they head the file)
    import_types: frozenset[str]
    # top-level nodes searched for imports/definitions as if their children were top-level
    # (C preprocessor conditionals around a whole header, C++ namespaces, Rust inline modules)
    namespace_types: frozenset[str]
    # definition node type -> kind
    definition_types: dict[str, str]
    # wrappers whose single inner declaration is the definition (decorators, export, template)
    wrapper_types: frozenset[str]
    # definitions whose members (methods, nested types) are indexed too
    member_holders: frozenset[str]
    # body node types, for definitions whose body has no "body" field
    body_types: frozenset[str] = frozenset()
    # Python: blocks are delimited by indentation, so a cursor on a blank line is placed by column
    indent_scoped: bool = False


def _set(*names: str) -> frozenset[str]:
    return frozenset(names)


_JS_SCOPES = _set(
    "class_declaration", "class", "function_declaration", "function_expression",
    "generator_function_declaration", "generator_function", "method_definition", "arrow_function",
)
_JS_STATEMENT_PARENTS = _set("program", "statement_block", "class_body", "switch_case", "switch_default")
_JS_DEFINITIONS = {
    "class_declaration": "class",
    "function_declaration": "function",
    "generator_function_declaration": "function",
    "lexical_declaration": "variable",
    "variable_declaration": "variable",
    "method_definition": "method",
    "field_definition": "field",
}
_TS_DEFINITIONS = {
    **{kind: role for kind, role in _JS_DEFINITIONS.items() if kind != "field_definition"},
    "abstract_class_declaration": "class",
    "interface_declaration": "interface",
    "type_alias_declaration": "type",
    "enum_declaration": "enum",
    "function_signature": "function",
    "method_signature": "method",
    "abstract_method_signature": "method",
    "public_field_definition": "field",
    "property_signature": "field",
}
_TS_SCOPES = _JS_SCOPES | _set(
    "abstract_class_declaration", "interface_declaration", "internal_module", "module", "enum_declaration",
)
_TS_STATEMENT_PARENTS = _JS_STATEMENT_PARENTS | _set("interface_body", "enum_body")

_C_STATEMENT_PARENTS = _set(
    "translation_unit", "compound_statement", "field_declaration_list", "declaration_list",
    "case_statement", "preproc_if", "preproc_ifdef", "preproc_else", "preproc_elif",
)
_C_NAMESPACES = _set("preproc_if", "preproc_ifdef", "preproc_else", "preproc_elif", "linkage_specification")
_C_DEFINITIONS = {
    "function_definition": "function",
    "declaration": "declaration",
    "struct_specifier": "struct",
    "union_specifier": "struct",
    "enum_specifier": "enum",
    "type_definition": "type",
    "preproc_def": "macro",
    "preproc_function_def": "macro",
}

SPECS: dict[str, LanguageSpec] = {
    "python": LanguageSpec(
        name="python",
        scope_types=_set("class_definition", "function_definition"),
        statement_parents=_set("module", "block"),
        import_types=_set("import_statement", "import_from_statement", "future_import_statement"),
        namespace_types=frozenset(),
        definition_types={
            "function_definition": "function",
            "class_definition": "class",
            "expression_statement": "variable",  # only `NAME = …` assignments count
        },
        wrapper_types=_set("decorated_definition"),
        member_holders=_set("class_definition"),
        indent_scoped=True,
    ),
    "javascript": LanguageSpec(
        name="javascript",
        scope_types=_JS_SCOPES,
        statement_parents=_JS_STATEMENT_PARENTS,
        import_types=_set("import_statement"),
        namespace_types=frozenset(),
        definition_types=_JS_DEFINITIONS,
        wrapper_types=_set("export_statement"),
        member_holders=_set("class_declaration"),
    ),
    "typescript": LanguageSpec(
        name="typescript",
        scope_types=_TS_SCOPES,
        statement_parents=_TS_STATEMENT_PARENTS,
        import_types=_set("import_statement"),
        namespace_types=_set("internal_module", "module"),
        definition_types=_TS_DEFINITIONS,
        # `namespace N {…}` parses as an expression statement around the namespace
        wrapper_types=_set("export_statement", "ambient_declaration", "expression_statement"),
        member_holders=_set("class_declaration", "abstract_class_declaration", "interface_declaration"),
    ),
    "go": LanguageSpec(
        name="go",
        scope_types=_set("function_declaration", "method_declaration", "func_literal", "type_declaration"),
        statement_parents=_set(
            "source_file", "block", "statement_list", "field_declaration_list",
            "expression_case", "default_case", "type_case", "communication_case",
        ),
        import_types=_set("import_declaration", "package_clause"),
        namespace_types=frozenset(),
        definition_types={
            "function_declaration": "function",
            "method_declaration": "method",
            "type_declaration": "type",
            "const_declaration": "variable",
            "var_declaration": "variable",
        },
        wrapper_types=frozenset(),
        member_holders=frozenset(),
    ),
    "rust": LanguageSpec(
        name="rust",
        scope_types=_set(
            "function_item", "impl_item", "trait_item", "mod_item", "struct_item", "enum_item", "union_item",
        ),
        statement_parents=_set(
            "source_file", "block", "declaration_list", "field_declaration_list", "enum_variant_list",
            "match_block",
        ),
        import_types=_set("use_declaration", "extern_crate_declaration"),
        namespace_types=_set("mod_item"),
        definition_types={
            "function_item": "function",
            "function_signature_item": "function",
            "struct_item": "struct",
            "enum_item": "enum",
            "union_item": "struct",
            "trait_item": "trait",
            "impl_item": "impl",
            "type_item": "type",
            "const_item": "variable",
            "static_item": "variable",
            "macro_definition": "macro",
        },
        wrapper_types=frozenset(),
        member_holders=_set("impl_item", "trait_item"),
    ),
    "java": LanguageSpec(
        name="java",
        scope_types=_set(
            "class_declaration", "interface_declaration", "enum_declaration", "record_declaration",
            "annotation_type_declaration", "method_declaration", "constructor_declaration",
            "compact_constructor_declaration",
        ),
        statement_parents=_set(
            "program", "block", "class_body", "interface_body", "enum_body", "enum_body_declarations",
            "constructor_body", "switch_block_statement_group", "annotation_type_body",
        ),
        import_types=_set("import_declaration", "package_declaration"),
        namespace_types=frozenset(),
        definition_types={
            "class_declaration": "class",
            "interface_declaration": "interface",
            "enum_declaration": "enum",
            "record_declaration": "class",
            "annotation_type_declaration": "interface",
            "method_declaration": "method",
            "constructor_declaration": "constructor",
            "field_declaration": "field",
            "constant_declaration": "field",
        },
        wrapper_types=frozenset(),
        member_holders=_set("class_declaration", "interface_declaration", "enum_declaration", "record_declaration"),
        body_types=_set("enum_body_declarations"),
    ),
    "c": LanguageSpec(
        name="c",
        scope_types=_set("function_definition", "struct_specifier", "union_specifier", "enum_specifier"),
        statement_parents=_C_STATEMENT_PARENTS,
        import_types=_set("preproc_include"),
        namespace_types=_C_NAMESPACES,
        definition_types=_C_DEFINITIONS,
        wrapper_types=frozenset(),
        member_holders=frozenset(),
    ),
    "cpp": LanguageSpec(
        name="cpp",
        scope_types=_set(
            "function_definition", "struct_specifier", "union_specifier", "enum_specifier",
            "class_specifier", "namespace_definition",
        ),
        statement_parents=_C_STATEMENT_PARENTS | _set("template_declaration"),
        import_types=_set("preproc_include"),
        namespace_types=_C_NAMESPACES | _set("namespace_definition"),
        definition_types={
            **_C_DEFINITIONS,
            "class_specifier": "class",
            "alias_declaration": "type",
            "field_declaration": "field",
            "concept_definition": "type",
        },
        wrapper_types=_set("template_declaration"),
        member_holders=_set("class_specifier", "struct_specifier"),
    ),
}
SPECS["tsx"] = LanguageSpec(**{**SPECS["typescript"].__dict__, "name": "tsx"})
