"""The drop-in scripts are built from the library by tools/amalgamate.py: each carries exactly the
modules its manifest needs, imports hoisted to the top, and the build fails loudly on anything
that would not work in one file. The copies must not drift from the modules."""

import ast
import os
import textwrap

import pytest

from helpers import ROOT, load_script

amalgamate = load_script(os.path.join(ROOT, "tools", "amalgamate.py"), "amalgamate")


def script_text(script):
    with open(os.path.join(ROOT, script)) as f:
        return f.read()


def test_embedded_copies_match_the_modules():
    assert amalgamate.drifted() == []


def test_an_edited_copy_is_detected_and_regenerated():
    script = "wan2_1/easycache_generate.py"
    text = script_text(script)
    edited = text.replace("candidate >= threshold", "candidate > threshold", 1)
    assert edited != text
    assert amalgamate.amalgamated(edited, script) == text


@pytest.mark.parametrize("script", sorted(amalgamate.MANIFEST))
def test_each_script_carries_its_manifest_and_only_that(script):
    text = script_text(script)
    listed = text.split("# modules: ", 1)[1].split("\n", 1)[0].split(", ")
    assert listed == [source.path for source in amalgamate.sources_for(script)]
    assert all(f"# --- {path} ---" in text for path in listed)
    assert "easycache/policies/uniform.py" in listed  # every registered policy ships
    if "wan" in script:
        assert "HUNYUAN_TEACACHE_COEFFICIENTS" not in text and "easycache/adapters/hunyuanvideo.py" not in listed
    else:
        assert "WAN21_TEACACHE_COEFFICIENTS" not in text and "easycache/adapters/wan21.py" not in listed


@pytest.mark.parametrize("script", sorted(amalgamate.MANIFEST))
def test_imports_are_at_the_top_and_the_script_imports_without_side_effects(script):
    tree = ast.parse(script_text(script))
    kinds = [isinstance(node, (ast.Import, ast.ImportFrom)) for node in tree.body[1:]]  # after the docstring
    first_code = kinds.index(False)
    assert any(kinds[:first_code]) and not any(kinds[first_code:])
    assert not any(isinstance(n, ast.ImportFrom) and (n.module or "").startswith("easycache") for n in tree.body)
    module = load_script(os.path.join(ROOT, script), "script_under_test")
    assert callable(module.main) and "easycache" in module.REGISTRY


@pytest.fixture
def fake_library(tmp_path, monkeypatch):
    """A library of three modules and a script, built in a temporary root."""
    def write(path, text):
        full = tmp_path / path
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_text(textwrap.dedent(text))
    write("easycache/__init__.py", "")
    write("easycache/a.py", """\
        import os
        from typing import List

        A = 1
        """)
    write("easycache/b.py", """\
        import os
        from easycache.a import A

        def b():
            return A + 1
        """)
    write("script.py", '''\
        """A script."""
        import sys

        def main():
            return b()
        ''')
    monkeypatch.setattr(amalgamate, "ROOT", str(tmp_path))
    monkeypatch.setattr(amalgamate, "MANIFEST", {"script.py": ["easycache/b.py"]})
    return write


def test_markers_are_inserted_and_dependencies_come_first(fake_library, tmp_path):
    text = amalgamate.amalgamated((tmp_path / "script.py").read_text(), "script.py")
    assert text.index("import sys") < text.index(amalgamate.BEGIN) < text.index("# --- easycache/a.py") \
        < text.index("# --- easycache/b.py") < text.index(amalgamate.END) < text.index("def main")
    assert text.count("import os") == 1 and "from easycache" not in text
    namespace = {}
    exec(compile(text, "script.py", "exec"), namespace)
    assert namespace["main"]() == 2
    assert amalgamate.amalgamated(text, "script.py") == text  # idempotent


@pytest.mark.parametrize("change,error", [
    (("easycache/b.py", "from easycache.a import A, B\n"), "imports B from easycache.a, which does not define it"),
    (("easycache/b.py", "from easycache.c import C\n"), "module easycache.c has no file easycache/c.py"),
    (("easycache/b.py", "from easycache.a import A\nimport easycache.a\n"), "use 'from easycache.x import name'"),
    (("easycache/b.py", "from easycache.a import A\nA = 2\n"), "A is defined in both easycache/a.py and easycache/b.py"),
    (("script.py", '"""s"""\nimport sys\nA = 3\n'), "script.py defines A, which the embedded library defines too"),
    (("easycache/b.py", "def f():\n    from easycache.a import A\n"), "library imports must be at the top"),
])
def test_what_would_break_one_file_fails_loudly(fake_library, tmp_path, change, error):
    fake_library(*change)
    with pytest.raises(amalgamate.AmalgamationError, match=error.replace("(", r"\(").replace(")", r"\)")):
        amalgamate.amalgamated((tmp_path / "script.py").read_text(), "script.py")


def test_a_manifest_entry_without_a_module_fails_loudly(fake_library, tmp_path, monkeypatch):
    monkeypatch.setattr(amalgamate, "MANIFEST", {"script.py": ["easycache/missing.py"]})
    with pytest.raises(amalgamate.AmalgamationError, match="matches no module"):
        amalgamate.amalgamated((tmp_path / "script.py").read_text(), "script.py")
