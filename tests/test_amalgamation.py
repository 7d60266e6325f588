"""The drop-in scripts carry copies of easycache/*.py; the copies must not drift."""

from conftest import load_script

amalgamate = load_script("tools/amalgamate.py", "amalgamate")


def test_embedded_copies_match_the_sources():
    assert amalgamate.drifted() == []


def test_an_edited_copy_is_detected_and_regenerated():
    with open(amalgamate.ROOT + "/" + amalgamate.SCRIPTS[0]) as f:
        text = f.read()
    edited = text.replace("candidate >= threshold", "candidate > threshold", 1)
    assert edited != text
    assert amalgamate.amalgamated(edited) == text


def test_every_script_embeds_every_source():
    for script in amalgamate.SCRIPTS:
        with open(amalgamate.ROOT + "/" + script) as f:
            text = f.read()
        for source in amalgamate.SOURCES:
            assert amalgamate.BEGIN.format(source) in text and amalgamate.END.format(source) in text
