import shlex

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reprobuild.templating import Context, TemplateError, render, render_cmd, render_tree


def ctx(**params):
    return Context(params=params, vars={"data": "d"})


def test_lookup_order_local_params_vars():
    c = Context(
        local={"item": {"lr": 0.1}}, params={"seed": 1, "data": "p"}, vars={"data": "v", "x": "y"}
    )
    assert render("${item.lr}/${seed}/${data}/${x}", c) == "0.1/1/p/y"
    assert c.used_params == {"seed", "data"}


def test_whole_value_keeps_type():
    assert render("${n}", ctx(n=3)) == 3
    assert render("${l}", ctx(l=[1, 2])) == [1, 2]


def test_escape():
    assert render_cmd(r"echo \${HOME}", ctx()) == "echo ${HOME}"


def test_unknown_name():
    with pytest.raises(TemplateError, match="unknown name"):
        render("${missing}", ctx())


def test_list_in_cmd_refused():
    with pytest.raises(TemplateError, match="not a single value"):
        render_cmd("echo ${m}", ctx(m=[1, 2]))


def test_render_tree_keeps_keys_and_lists():
    assert render_tree({"${data}/x": ["${data}/y", 1]}, ctx()) == {"d/x": ["d/y", 1]}


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
        max_size=40,
    )
)
def test_any_value_is_exactly_one_shell_word(value):
    cmd = render_cmd("prog --v ${v} --w=${v}", ctx(v=value))
    words = shlex.split(cmd)
    assert words == ["prog", "--v", value, f"--w={value}"]


@settings(max_examples=60, deadline=None)
@given(
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
        min_size=1,
        max_size=30,
    ),
    st.sampled_from(
        [
            "printf '%s' ${v}",
            "printf '%s' \"${v}\"",
            "printf '%s' '${v}'",
            "printf '%s' \"a ${v} b\"",
            "printf '%s' x${v}'y'\"z\"",
        ]
    ),
)
def test_real_shell_receives_the_literal_value(value, template):
    """Bare, inside "...", inside '...', mid-word: sh always prints the value itself."""
    import subprocess

    cmd = render_cmd(template, ctx(v=value))
    out = subprocess.run(["sh", "-c", cmd], capture_output=True).stdout
    expected = {
        "printf '%s' \"a ${v} b\"": f"a {value} b",
        "printf '%s' x${v}'y'\"z\"": f"x{value}yz",
    }
    assert out == expected.get(template, value).encode()


def test_quoted_injection_attempts_stay_literal(tmp_path):
    import subprocess

    for template in ('echo "${v}" > out', "echo '${v}' > out", "echo ${v} > out"):
        cmd = render_cmd(template, ctx(v="$(touch PWNED)`touch PWNED2`'\"; touch PWNED3"))
        subprocess.run(["sh", "-c", cmd], cwd=tmp_path, check=True)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], template
