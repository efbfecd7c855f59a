"""Differential test: random scoping programs behave identically under TF 1.x and scoped_params.

Each program (``tests/_tf1_programs.py``) runs under ``tensorflow.compat.v1`` in a fresh graph and
under ``sp.transform(fn).init(key)``. They must agree on every observation: the scope name, reuse
mode and name scope after every scope entry, exit and ``reuse_variables()``; the full name every
``get`` resolves to; the names created, in order; and the outcome (success, already exists, does
not exist, shape mismatch, dtype mismatch, shape not fully defined, reuse without a name).

Then ``apply``: a program whose init succeeds must apply to its params with the same observations,
``get_param`` handing back exactly the leaves of ``params``. A program whose init fails at step k
is run again up to step k only (its longest successful prefix); apply with *those* params must
fail at step k in the same category. One exception, by design: when init failed because a new
parameter had no shape, apply cannot know that (apply never creates), so it reports the name as
missing from params ("does not exist").

How creation order is read without perturbing the program: the first time a name comes back from a
successful ``get_param`` is its creation (nothing can be reused before it exists), and the name is
``get_scope().name + "/" + name``, itself compared with TF. The result is checked against the keys
of ``sp.flatten(params)``, and the returned objects against the names (init: reuse returns the very
placeholder made at creation, distinct names distinct objects; apply: the leaf of ``params``). On
the TF side the order is ``global_variables()`` mapped to the variable store's keys, because TF
can give a variable an op name different from its key (``A/v`` becomes op ``A/v_1`` after ``a/v``).
"""

import collections
import os

import jax
import pytest
from hypothesis import HealthCheck, given, settings

import scoped_params as sp
import _tf1_programs as P
from _tf1_programs import (AUTO, ByCaptured, ByDefault, ByName, Get, NameScope,
                          ReuseVariables, Scope)

pytest.importorskip("tensorflow")

N_PROGRAMS = int(os.environ.get("SP_DIFFERENTIAL_EXAMPLES", "520"))
_KEY = jax.random.key(0)
_STATS = collections.Counter()


def _first_difference(a: list, b: list) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"first difference at #{i}:\n    TF:  {x}\n    sp:  {y}"
    return f"lengths differ: TF {len(a)}, sp {len(b)}; tail TF {a[len(b):][:3]} sp {b[len(a):][:3]}"


def differential_mismatches(program) -> list:
    """Every way scoped_params disagrees with TF 1.x on ``program`` (empty when they agree)."""
    tf = P.run_tf(program)
    ours, params = P.run_sp(program, _KEY, keep_going=True)
    _STATS["programs"] += 1
    _STATS["first " + tf.outcome] += 1
    _STATS["statements"] += sum(event[0] in ("get", "enter", "error") for event in tf.trace)
    for event in tf.trace:
        if event[0] == "error":
            _STATS[event[1]] += 1
    out = list(ours.problems)
    if tf.trace != ours.trace:
        out.append("init trace: " + _first_difference(tf.trace, ours.trace))
    if tf.created != ours.created:
        out.append(f"created: TF {tf.created} sp {ours.created}")
    if (tf.outcome, tf.fail_step) != (ours.outcome, ours.fail_step):
        out.append(f"first error: TF {tf.outcome!r} at step {tf.fail_step}: "
                   f"{tf.message.splitlines()[:1]}\n    sp {ours.outcome!r} at step "
                   f"{ours.fail_step}: {ours.message.splitlines()[:1]}")
    if sorted(sp.flatten(params)) != sorted(ours.created):
        out.append(f"init params {sorted(sp.flatten(params))} != created {ours.created}")
    if out:
        return out

    if tf.outcome == P.OK:
        applied, _ = P.run_sp(program, _KEY, params=params)
        out += applied.problems
        if applied.outcome != P.OK:
            out.append(f"apply failed where init succeeded: {applied.message}")
        elif applied.trace != ours.trace or applied.created != ours.created:
            out.append("apply trace: " + _first_difference(ours.trace, applied.trace))
        return out

    # The first error at step k must leave init unchanged; then init only the steps before k and
    # apply the whole program to those params: it must fail at step k in the same category.
    k, until = tf.fail_step, ours.until_first_error()
    stopped, _ = P.run_sp(program, _KEY)
    out += stopped.problems
    if stopped.trace != until:
        out.append("init stopping at the first error: " + _first_difference(until, stopped.trace))
    prefix, prefix_params = P.run_sp(program, _KEY, stop_at=k)
    out += prefix.problems
    if prefix.outcome != P.OK or prefix.trace != until[:-1]:
        return out + [f"init of the steps before {k}: " + _first_difference(until[:-1], prefix.trace)]
    if sorted(sp.flatten(prefix_params)) != sorted(prefix.created):
        return out + [f"prefix params {sorted(sp.flatten(prefix_params))} != {prefix.created}"]
    applied, _ = P.run_sp(program, _KEY, params=prefix_params)
    out += applied.problems
    expected = P.NOT_FOUND if tf.outcome == P.UNDEFINED_SHAPE else tf.outcome
    expected_trace = until[:-1] + [("error", expected, k)]
    if applied.trace != expected_trace:
        out.append(f"apply with the prefix's params (expected {expected!r} at step {k}): "
                   + _first_difference(expected_trace, applied.trace) + f"\n    {applied.message}")
    return out


def assert_agrees(program) -> None:
    problems = differential_mismatches(program)
    if problems:
        _STATS["mismatches"] += 1
        pytest.fail("scoped_params disagrees with TF 1.x on\n\n" + P.render(program) + "\n\n"
                    + "\n".join(problems), pytrace=False)


@settings(max_examples=N_PROGRAMS, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(P.programs())
def _random_programs_agree(program):
    assert_agrees(program)


def test_random_scoping_programs_behave_as_in_tf1(capsys):
    _STATS.clear()
    _random_programs_agree()
    first = {c: _STATS["first " + c] for c in P.CATEGORIES}
    errors = {c: _STATS[c] for c in P.CATEGORIES[1:]}
    with capsys.disabled():
        print(f"\n[tf differential] {_STATS['programs']} programs, {_STATS['mismatches']} mismatches; "
              f"first outcome {first}; all errors {errors}; {_STATS['statements']} get/scope steps")
    assert _STATS["programs"] >= min(N_PROGRAMS, 500)
    # Every outcome must actually be exercised, or the agreement above proves little.
    assert first[P.OK] and all(errors.values()), (first, errors)


# Hand-picked programs: TF rules whose corners random programs reach only rarely.
_CASES = {
    # rule 20: default_name numbering continues across a jump into a captured scope ...
    "default_name_numbering_survives_a_jump": (
        Scope(ByName("a"), capture=0, body=(
            Scope(ByDefault("d"), (Get("v", (1,)),)),
            Scope(ByCaptured(0), (Scope(ByDefault("d"), (Get("v", (1,)),)),)),
            Scope(ByDefault("d"), (Get("v", (1,)),)),
        )),
    ),
    # ... and the counters a jump advanced are rolled back when it exits.
    "default_names_taken_inside_a_jump_are_free_again_after_it": (
        Scope(ByName("a"), capture=0, body=()),
        Scope(ByCaptured(0), (
            Scope(ByDefault("d"), ()), Scope(ByDefault("d"), ()), Scope(ByDefault("d"), ()),
        )),
        Scope(ByName("a"), (
            Scope(ByDefault("d"), (Get("v", ()),)),
            Scope(ByDefault("d"), (Get("v", ()),)),
        )),
    ),
    "default_name_numbering_restarts_when_the_parent_is_reentered": (
        Scope(ByName("a"), capture=0, body=(
            Scope(ByDefault("d"), (Get("v", ()),)), Scope(ByDefault("d"), (Get("v", ()),)))),
        Scope(ByCaptured(0), (Scope(ByDefault("d"), (Get("w", ()),)),)),
    ),
    "string_scopes_count_toward_default_names": (
        Scope(ByName("d"), ()), Scope(ByDefault("d"), (Get("v", ()),)),
        Scope(ByName("d_1"), (Get("w", ()),)),
    ),
    "multi_component_scope_name_is_the_nested_path": (
        Scope(ByName("a/b"), (Get("v", (2,)),)),
        Scope(ByName("a"), (Scope(ByName("b"), (Get("v", (2,)),)),)),
    ),
    "captured_scope_keeps_its_reuse_not_the_enclosing_one": (
        Scope(ByName("a"), capture=0, body=(Get("v", (1,)),)),
        Scope(ByName("b"), reuse=True, body=(Scope(ByCaptured(0), (Get("v", (1,)),)),)),
    ),
    "reuse_variables_on_a_captured_reentry_does_not_change_the_captured_scope": (
        Scope(ByName("a"), capture=0, body=(Get("v", ()),)),
        Scope(ByCaptured(0), (ReuseVariables(), Get("v", ()))),
        Scope(ByCaptured(0), (Get("w", ()),)),
    ),
    "reuse_variables_at_the_root_reaches_the_captured_root": (
        Get("v", ()), ReuseVariables(),
        Scope(ByName("a"), (Scope(ByCaptured(-1), (Get("v", ()), Get("w", ()))),)),
    ),
    "auto_reuse_inside_reuse_true_creates_again": (
        Scope(ByName("a"), reuse=True, body=(Scope(ByName("b"), reuse=AUTO, body=(Get("v", ()),)),)),
    ),
    "reuse_true_with_default_name_is_refused": (
        Scope(ByDefault("d"), reuse=AUTO, body=()),
    ),
    "dtype_none_on_reuse_means_the_scope_dtype": (
        Scope(ByName("a"), dtype="int32", capture=0, body=(Get("v", (2,)),)),
        Scope(ByCaptured(0), reuse=True, body=(Get("v", (2,)),)),
        Scope(ByName("a"), reuse=True, body=(Get("v", (2,)),)),
    ),
    "name_scopes_are_uniquified_case_insensitively": (
        NameScope("a", (Scope(ByName("A"), (Get("v", ()),)), Scope(ByName("a"), (Get("v", ()),)))),
        Scope(ByName("A"), reuse=True, aux=False, body=(Get("v", ()), NameScope("A", ()))),
    ),
    "a_missing_shape_fails_creation_but_not_reuse": (
        Scope(ByName("a"), (Get("v", (2, 3)),)),
        Scope(ByName("a"), reuse=AUTO, body=(Get("v", None), Get("w", None))),
    ),
}


@pytest.mark.parametrize("name", sorted(_CASES))
def test_tf1_corner_cases_behave_the_same(name):
    assert_agrees(_CASES[name])
