"""Server pieces that need no process: position conversion, settings, CLI locations."""
import pytest
from lsprotocol.types import Position, PositionEncodingKind as Enc

from completion.cli import cursor_offset, parse_location
from lsp_server.config import ServerConfig
from lsp_server.positions import LineIndex, PositionError

TEXT = "ab🎉c\r\né=x\n\nlast"


@pytest.mark.parametrize("enc,pos,offset", [
    (Enc.Utf16, Position(0, 2), 2), (Enc.Utf16, Position(0, 4), 3), (Enc.Utf16, Position(0, 5), 4),
    (Enc.Utf8, Position(0, 6), 3), (Enc.Utf8, Position(1, 2), 7), (Enc.Utf32, Position(0, 3), 3),
    (Enc.Utf16, Position(3, 4), len(TEXT)), (Enc.Utf16, Position(2, 0), 10),
])
def test_offsets_roundtrip(enc, pos, offset):
    index = LineIndex(TEXT)
    assert index.offset(pos, enc) == offset
    assert index.position(offset, enc) == pos


@pytest.mark.parametrize("enc,pos,message", [
    (Enc.Utf16, Position(0, 3), "inside a character"),     # between the surrogates of 🎉
    (Enc.Utf8, Position(1, 1), "inside a character"),      # inside the two bytes of é
    (Enc.Utf16, Position(0, 6), "past the end of line"),   # the \r is not part of the line
    (Enc.Utf16, Position(4, 0), "past the end of the document"),
])
def test_bad_positions(enc, pos, message):
    with pytest.raises(PositionError, match=message):
        LineIndex(TEXT).offset(pos, enc)


def test_settings_merge_and_refuse_bad_values():
    cfg, problems = ServerConfig().merged({"eyas": {"maxTokens": 8, "temperature": "hot", "topP": 0.9,
                                                    "enable": {"markdown": False}, "unknown": 1}})
    assert cfg.max_tokens == 8 and cfg.top_p == 0.9 and cfg.temperature == 0.0
    assert len(problems) == 1 and "temperature" in problems[0]
    assert not cfg.enabled_for("markdown") and cfg.enabled_for("python")
    assert not cfg.needs_reload(ServerConfig())
    assert ServerConfig(model="m").needs_reload(cfg)
    assert ServerConfig().merged(None) == (ServerConfig(), [])
    assert ServerConfig().merged([1])[1]


def test_multiline_and_speculative_k_settings():
    cfg, problems = ServerConfig().merged({"multiline": {"python": "never"}, "speculativeK": 6})
    assert not problems and cfg.speculative_k == 6
    assert cfg.multiline_for("python") == "never" and cfg.multiline_for("go") == "auto"
    cfg, problems = cfg.merged({"multiline": "always"})     # a string sets the default, keeps the rest
    assert cfg.multiline_for("go") == "always" and cfg.multiline_for("python") == "never"
    cfg, problems = cfg.merged({"multiline": "sometimes", "speculativeK": 0})
    assert len(problems) == 2 and cfg.multiline_for("go") == "always" and cfg.speculative_k == 6


def test_cli_locations():
    assert parse_location("a/b.py:3:7") == (__import__("pathlib").Path("a/b.py"), 3, 7)
    assert parse_location("b.py:3")[1:] == (3, None)
    assert parse_location("c:/x.py")[1:] == (None, None)
    text = "one\ntwo\n"
    assert cursor_offset(text, 2, 2) == 5 and cursor_offset(text, 2, None) == 7 and cursor_offset(text, None, None) == 8
    with pytest.raises(SystemExit):
        cursor_offset(text, 9, 1)


def test_every_cli_tool_resolves():
    import importlib
    from completion.cli import TOOLS
    for (command, which), target in TOOLS.items():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), (command, which)
