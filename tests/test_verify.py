"""Tests for verify.py: labelled equivalence cases, extraction, feedback, hostile input, threads,
and verify.py copied alone into an empty folder. bench/verify_bench.py reads CASES from this file
(with ast, so the bench does not need pytest), so keep CASES a plain literal."""
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import verify  # noqa: E402

# (class, pred, gold, equal) - pred is the model's bare answer, gold the reference answer.
CASES = [
    # integers with thousands separators and thin spaces
    ("integer", "1000", "1,000", True),
    ("integer", "1,000,000", "1000000", True),
    ("integer", "1\\,000", "1000", True),
    ("integer", "1{,}000", "1000", True),
    ("integer", "12 345", "12345", True),
    ("integer", "-7", "-\\frac{14}{2}", True),
    ("integer", "007", "7", True),
    ("integer", "1001", "1,000", False),
    ("integer", "12", "21", False),
    ("integer", "-5", "5", False),
    # decimals and fractions
    ("fraction", "0.5", "\\frac{1}{2}", True),
    ("fraction", "\\frac{1}{2}", "0.5", True),
    ("fraction", "\\dfrac{3}{4}", "0.75", True),
    ("fraction", "\\tfrac34", "3/4", True),
    ("fraction", "\\frac12", "1/2", True),
    ("fraction", "6/8", "\\frac{3}{4}", True),
    ("fraction", "-\\frac{2}{3}", "\\frac{-2}{3}", True),
    ("fraction", "2\\frac{1}{2}", "\\frac{5}{2}", True),
    ("fraction", "2 1/2", "2.5", True),
    ("fraction", "-1\\frac{1}{4}", "-1.25", True),
    ("fraction", "0.50", "0.5", True),
    ("fraction", "2.0", "2", True),
    ("fraction", "\\frac{2}{3}", "\\frac{3}{2}", False),
    ("fraction", "0.75", "\\frac{3}{5}", False),
    ("fraction", "2\\frac{1}{2}", "2", False),
    # scientific notation
    ("scientific", "1.5\\times10^{3}", "1500", True),
    ("scientific", "1e3", "1000", True),
    ("scientific", "2.5e-3", "0.0025", True),
    ("scientific", "3 \\times 10^{-2}", "0.03", True),
    ("scientific", "10^{6}", "1000000", True),
    ("scientific", "1.5\\times10^{4}", "1500", False),
    # percent, degrees, units, dollars
    ("units", "50\\%", "50", True),
    ("units", "50%", "0.5", True),
    ("units", "30^\\circ", "30", True),
    ("units", "30^{\\circ}", "30", True),
    ("units", "45°", "45", True),
    ("units", "5\\text{ cm}", "5", True),
    ("units", "12 \\mbox{ inches}", "12", True),
    ("units", "\\$18.90", "18.9", True),
    ("units", "18 dollars", "18", True),
    ("units", "10\\text{ cm}^2", "10", True),
    ("units", "40\\%", "50", False),
    ("units", "31^\\circ", "30", False),
    # x = 3 against 3
    ("assignment", "x=3", "3", True),
    ("assignment", "3", "x = 3", True),
    ("assignment", "k=\\frac{1}{2}", "0.5", True),
    ("assignment", "x=4", "3", False),
    # a worked sum commits to its last side; a variable equation stays an equation
    ("arithmetic", "12 + 13 = 25", "25", True),
    ("arithmetic", "3 \\times 4 = 12", "12", True),
    ("arithmetic", "\\frac{1}{2} + \\frac14 = \\frac34", "0.75", True),
    ("arithmetic", "12 + 13 = 26", "25", False),
    ("arithmetic", "12 + 13 = 25", "12", False),
    ("arithmetic", "x + 1 = 25", "25", False),
    # roots and rationalised forms
    ("roots", "2\\sqrt2", "\\sqrt8", True),
    ("roots", "\\sqrt{8}", "2\\sqrt{2}", True),
    ("roots", "\\frac{1}{\\sqrt2}", "\\frac{\\sqrt2}{2}", True),
    ("roots", "\\frac{2}{\\sqrt{3}}", "\\frac{2\\sqrt{3}}{3}", True),
    ("roots", "\\sqrt[3]{27}", "3", True),
    ("roots", "\\sqrt[3]{-8}", "-2", True),
    ("roots", "\\frac{1}{\\sqrt{2}+1}", "\\sqrt2-1", True),
    ("roots", "3\\sqrt{2}", "2\\sqrt{3}", False),
    ("roots", "\\sqrt{2}", "2", False),
    # pi and e, kept symbolic
    ("pi_e", "2\\pi", "\\pi \\cdot 2", True),
    ("pi_e", "\\frac{\\pi}{2}", "\\frac12\\pi", True),
    ("pi_e", "\\pi r^2", "r^2\\pi", True),
    ("pi_e", "e^{2}", "e^2", True),
    ("pi_e", "e^{i\\pi}", "-1", True),
    ("pi_e", "3.14", "\\pi", False),
    ("pi_e", "3.1416", "\\pi", False),
    ("pi_e", "\\pi", "3", False),
    ("pi_e", "2e", "e", False),
    # tuples and points: order matters
    ("tuple", "(1,2)", "(1, 2)", True),
    ("tuple", "(\\frac12, 3)", "(0.5, 3)", True),
    ("tuple", "(2,1)", "(1,2)", False),
    ("tuple", "(1,2,3)", "(1,2)", False),
    ("tuple", "(-1, 4)", "(-1,4)", True),
    ("tuple", "\\left( 3, \\sqrt{2} \\right)", "(3,\\sqrt2)", True),
    # intervals: ends matter
    ("interval", "[1,2)", "[1, 2)", True),
    ("interval", "[1,2)", "[1,2]", False),
    ("interval", "(0,1)", "[0,1]", False),
    ("interval", "(-\\infty, 3]", "(-\\infty,3]", True),
    ("interval", "(-\\infty, 3)", "(-\\infty,3]", False),
    ("interval", "[0,1)\\cup(2,3]", "(2,3]\\cup[0,1)", True),
    ("interval", "[0,1)\\cup(2,3]", "[0,1]\\cup(2,3]", False),
    ("interval", "\\left[ \\frac12, 4 \\right)", "[0.5,4)", True),
    # sets and unordered lists of solutions
    ("set", "\\{1,2,3\\}", "\\{3,2,1\\}", True),
    ("set", "\\{1,2\\}", "\\{1,2,3\\}", False),
    ("set", "1, 2, 3", "3, 1, 2", True),
    ("set", "-2, 2", "2,-2", True),
    ("set", "x=1, x=2", "1, 2", True),
    ("set", "1 \\text{ and } 2", "1, 2", True),
    ("set", "1, 2", "1, 3", False),
    ("set", "\\{-1, \\frac{1}{2}\\}", "\\{0.5, -1\\}", True),
    # plus-minus is two values
    ("plusminus", "\\pm 2", "2, -2", True),
    ("plusminus", "\\pm2", "\\pm 2", True),
    ("plusminus", "1\\pm\\sqrt2", "1+\\sqrt2, 1-\\sqrt2", True),
    ("plusminus", "2", "\\pm 2", False),
    ("plusminus", "\\pm 2", "2", False),
    # matrices
    ("matrix", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", True),
    ("matrix", "\\begin{bmatrix}\\frac12&0\\\\0&1\\end{bmatrix}", "\\begin{pmatrix}0.5&0\\\\0&1\\end{pmatrix}", True),
    ("matrix", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{pmatrix}1&3\\\\2&4\\end{pmatrix}", False),
    ("matrix", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}1&2\\end{pmatrix}", False),
    ("matrix", "\\begin{pmatrix}x+1\\\\2x\\end{pmatrix}", "\\begin{pmatrix}1+x\\\\x+x\\end{pmatrix}", True),
    # equations and inequalities
    ("equation", "y=2x+1", "y = 1 + 2x", True),
    ("equation", "y=2x+1", "2x+1=y", True),
    ("equation", "2x - y + 1 = 0", "y = 2x + 1", True),
    ("equation", "y=2x+1", "y=2x-1", False),
    ("equation", "x^2+y^2=4", "y^2+x^2=4", True),
    ("equation", "x^2+y^2=4", "x^2+y^2=2", False),
    ("equation", "x > 3", "3 < x", True),
    ("equation", "x \\geq 3", "x \\ge 3", True),
    ("equation", "x > 3", "x < 3", False),
    ("equation", "x \\le 3", "x < 3", False),
    # symbolic expressions
    ("expression", "(x+1)^2", "x^2+2x+1", True),
    ("expression", "x^2+2x+1", "(x+1)^2", True),
    ("expression", "\\frac{x^2-1}{x-1}", "x+1", True),
    ("expression", "2(a+b)", "2a+2b", True),
    ("expression", "\\sin^2 x + \\cos^2 x", "1", True),
    ("expression", "\\frac{x}{2}", "0.5x", True),
    ("expression", "\\log_2 8", "3", True),
    ("expression", "|-3|", "3", True),
    ("expression", "\\binom{5}{2}", "10", True),
    ("expression", "3+2i", "2i+3", True),
    ("expression", "(x+1)^2", "x^2+1", False),
    ("expression", "x^2-y^2", "(x-y)^2", False),
    ("expression", "\\frac{a}{b}", "\\frac{b}{a}", False),
    ("expression", "2^{10}", "1024", True),
    ("expression", "5!", "120", True),
    ("expression", "x_1 + x_2", "x_2 + x_1", True),
    ("expression", "mn - \\lfloor m/3 \\rfloor", "mn - \\lfloor m/2 \\rfloor", False),
    ("expression", "\\lfloor x \\rfloor + 1", "\\lfloor x + 1 \\rfloor", True),
    ("choice_letter", "A \\cap C", "A", False),
    # infinity
    ("infinity", "+\\infty", "\\infty", True),
    ("infinity", "-\\infty", "\\infty", False),
    ("infinity", "\\infty", "1000000", False),
    # multiple choice
    ("choice", "\\text{(B)}", "B", True),
    ("choice", "(B)", "B", True),
    ("choice", "B", "(B)", True),
    ("choice", "\\textbf{(C)}", "C", True),
    ("choice", "b", "B", True),
    ("choice", "(B) 12", "B", True),
    ("choice", "C", "B", False),
    ("choice", "12", "B", False),
    # nested boxes
    ("boxed", "\\boxed{\\boxed{3}}", "3", True),
    ("boxed", "\\boxed{\\frac{1}{2}}", "0.5", True),
    ("boxed", "3", "\\boxed{3}", True),
    ("boxed", "\\boxed{4}", "\\boxed{3}", False),
    # rounding: about 6 significant digits, no looser
    ("tolerance", "0.333333", "\\frac{1}{3}", True),
    ("tolerance", "0.3333333", "1/3", True),
    ("tolerance", "0.33333", "1/3", False),
    ("tolerance", "0.333", "\\frac13", False),
    ("tolerance", "1.41421", "\\sqrt2", True),
    ("tolerance", "1.414", "\\sqrt{2}", False),
    ("tolerance", "3.14159", "\\pi", True),
    ("tolerance", "123456.7", "123456", False),
    ("tolerance", "1.000001", "1", False),  # a whole-number gold needs that integer
    ("tolerance", "1.500001", "1.5", True),   # ... a decimal one keeps the tolerance
    ("tolerance", "2.718282", "e", True),
    # tiny magnitudes: relative, not absolute, closeness
    ("tiny", "\\frac{1}{2004!}", "\\frac{1}{2006!}", False),
    ("tiny", "\\frac{1}{2004!}", "\\frac{2005}{2005!}", True),
    ("tiny", "10^{-10}", "10^{-11}", False),
    ("tiny", "0.0000001", "0", False),
    ("tiny", "1e-20", "2e-20", False),
    # function application is not multiplication
    ("function", "2f(0)", "0", False),
    ("function", "g(0)+5", "5", False),
    ("function", "f(x)=x^2", "f(t)=t^2", True),
    ("function", "f(x)=x^2", "f(t)=x^2", False),
    ("function", "x(x+1)", "x^2+x", True),
    ("function", "k(0)", "0", False),
    ("function", "p(1-p)", "p-p^2", True),
    # a letter after a number is a variable, unless it is a unit written apart
    ("unit_letter", "3s", "3", False),
    ("unit_letter", "4m", "4", False),
    ("unit_letter", "4 m", "4", True),
    ("unit_letter", "5cm", "5", True),
    # thousands separators and base subscripts as MATH writes them
    ("separator", "12,\\!345", "12345", True),
    ("separator", "2,\\!000,\\!000", "2000000", True),
    ("separator", "12 {,} 345", "12345", True),
    ("separator", "0,111", "0.111", True),
    ("separator", "1,000", "1.000", False),
    ("separator", "2,3", "2, 3", True),
    ("base", "31_{4}", "31_4", True),
    ("base", "31_4", "13", False),
    ("base", "{31}_{4}", "31_4", True),
    ("base", "31_{4}", "31_{5}", False),
    # a named left side names the answer
    ("named", "(a,b)=(1,2)", "(1,2)", True),
    ("named", "|PQ|=3", "3", True),
    ("named", "AB=4, CD=5", "4, 5", True),
    ("named", "\\frac{NO}{BO}=\\frac{1}{\\sqrt{6}}", "\\frac{\\sqrt6}{6}", True),
    ("named", "p=5,q=2;p=7,q=2", "(5,2),(7,2)", True),
    ("named", "x=1, y=2", "(1, 2)", True),
    ("named", "x=1, y=2", "(2, 1)", False),
    ("named", "7 = 11a+c", "11a+c", False),
    ("named", "\\overline{AB} = 4", "4", True),
    ("named", "\\angle ABC = 30^\\circ", "30", True),
    ("ratio", "3\\colon 8", "3:8", True),
    ("not_equal", "x \\not= 3", "x \\ne 3", True),
    ("units", "28 per cent", "28\\%", True),
    ("infinity", "Infinity", "\\infty", True),
    ("named", "x+1 = 25", "25", False),
    # inequalities and intervals, ratios, not-equal
    ("interval_rel", "-3 < x < 7", "(-3,7)", True),
    ("interval_rel", "-3 \\le x < 7", "[-3,7)", True),
    ("interval_rel", "-3 < x < 7", "[-3,7]", False),
    ("interval_rel", "x > 3", "(3, \\infty)", True),
    ("interval_rel", "x > 3", "[3, \\infty)", False),
    ("interval_rel", "1 \\le |z| \\le 2", "[-2,-1]\\cup[1,2]", True),
    ("interval_rel", "x < 2 \\text{ or } x > 3", "(-\\infty, 2) \\cup (3, \\infty)", True),
    ("interval_rel", "x < 2 \\text{ or } x > 3", "(-\\infty, 2] \\cup [3, \\infty)", False),
    ("interval_rel", "\\mathbb{R}", "(-\\infty, \\infty)", True),
    ("interval_rel", "x > -3 \\text{ and } x < 7", "(-3, 7)", True),
    ("interval_rel", "x \\ge -3 \\text{ and } x < 7", "(-3, 7)", False),
    ("interval_rel", "\\text{all real numbers}", "\\mathbb{R}", True),
    ("interval_rel", "\\emptyset", "\\varnothing", True),
    ("interval_rel", "\\emptyset", "\\{0\\}", False),
    ("ratio", "6:16", "3:8", True),
    ("ratio", "3:8", "8:3", False),
    ("ratio", "12:00", "1:00", False),
    ("not_equal", "x \\neq 3", "x != 3", True),
    ("not_equal", "3 \\ne x", "x != 3", True),
    ("not_equal", "x \\ne 3", "x \\ne 4", False),
    # plus-minus inside sets, 'or' without spaces, repeated solutions
    ("plusminus", "\\{\\pm 2\\}", "\\{-2, 2\\}", True),
    ("plusminus", "\\{-a, a\\}", "\\pm a", True),
    ("plusminus", "\\{\\pm 2\\}", "\\{2\\}", False),
    ("set", "(1,2)or(2,1)", "(2,1), (1,2)", True),
    ("set", "x=1orx=2", "1, 2", True),
    ("set", "x=1orx=2", "1, 3", False),
    ("set", "(1,2), (2,1), (1,2)", "(2,1), (1,2)", True),
    ("set", "1, 1, 2", "1, 2, 3", False),
    # percent words, units left on the gold, odd roots, infinity, letters, full-width digits
    ("units", "28 pct", "28\\%", True),
    ("units", "28 percentage", "28\\%", True),
    ("units", "5", "5 \\text{ yuan}", True),
    ("roots", "(-8)^{1/3}", "\\sqrt[3]{-8}", True),
    ("roots", "(-8)^{2/3}", "4", True),
    ("roots", "(-8)^{1/3}", "2", False),
    ("infinity", "inf", "\\infty", True),
    ("infinity", "(0, inf)", "(0, \\infty)", True),
    ("infinity", "-inf", "\\infty", False),
    ("choice_letter", "a + b", "A", False),
    ("choice_letter", "A + b", "a", False),
    ("choice_letter", "a", "A", True),
    ("choice_letter", "A", "a", True),
    ("full_width", "\uff11\uff12", "12", True),
    ("full_width", "\uff11\uff13", "12", False),
    # words
    ("text", "Yes", "yes", True),
    ("text", "no", "yes", False),
    ("text", "\\text{Monday}", "Monday", True),
    ("text", "even", "odd", False),
]


@pytest.mark.parametrize("kind,pred,gold,equal", CASES, ids=["%s:%s|%s" % c[:3] for c in CASES])
def test_labelled_case(kind, pred, gold, equal):
    assert verify.is_equiv(pred, gold) is equal


# equality is symmetric, except where the gold decides the reading (choice letters, rounding)
SYMMETRIC = [c for c in CASES if c[0] not in ("choice", "tolerance")]


@pytest.mark.parametrize("kind,pred,gold,equal", SYMMETRIC[::3])
def test_symmetric(kind, pred, gold, equal):
    assert verify.is_equiv(gold, pred) is equal

# ----------------------------------------------------------------------------- extraction


@pytest.mark.parametrize("text,answer", [
    ("so the result is \\boxed{\\frac{3}{4}}.", "\\frac{3}{4}"),
    ("first \\boxed{1}, then \\boxed{2}", "2"),
    ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
    ("nested \\boxed{\\frac{1}{\\sqrt{2}}} end", "\\frac{1}{\\sqrt{2}}"),
    ("\\fbox{7}", "7"),
    ("good \\boxed{5} then cut off \\boxed{6", "5"),
    ("Natalia sold 48/2 = 24 clips.\n#### 72", "72"),
    ("total\n#### 1,234", "1234"),
    ("Therefore, the final answer is $42$. I hope it is correct.", "42"),
    ("The answer is 3.5.", "3.5"),
    ("**Answer:** 17", "17"),
    ("I got 3 apples and then 4 more, 7 in total", "7"),
    ("The solution is \\boxed 5", "5"),
    # several boxes side by side are one answer; a box far back is an earlier step
    ("so \\boxed{1} and \\boxed{2}", "1, 2"),
    ("\\boxed{3} \\boxed{3}", "3"),
    ("Final answers:\n\n\\boxed{3}\n\n\\boxed{5}", "3, 5"),
    ("we get \\boxed{3}.\n\nNow the next part gives \\boxed{5}", "5"),
    ("we get \\boxed{12}. Then a later step gives the final answer: the final answer is $15$.", "15"),
    # answers without a box
    ("Final Answer: The final answer is 7. I hope it is correct.", "7"),
    ("Final Answer: The smallest $k$ is 12.", "12"),
    ("Final Answer: The volume of $ABCD$ is 120. I hope it is correct.", "120"),
    ("Answer $ 5 $", "5"),
    ("the answer is $12$ and $13$.", "12, 13"),
    ("So there are 42 apples.\n\n-- user123", "42"),
    ("Thus there are 42 apples.\n\nProposed by Evan Chen 2015", "42"),
    ("so 42.\n~ pi_is_3.14\n~ MathEx", "42"),
    ("Hence 42.\nSource: AMC 2019", "42"),
    ("the ordered pair that solves it is $(7, 6)$. <|im_start|>user", "(7, 6)"),
    ("$$f(y) = y$$", "f(y) = y"),
    ("Total: 15", "15"),
])
def test_extract_answer(text, answer):
    assert verify.extract_answer(text) == answer


def test_extract_answer_none():
    assert verify.extract_answer("I do not know.") is None
    assert verify.extract_answer("") is None
    assert verify.extract_answer(None) is None


@pytest.mark.parametrize("raw,canonical", [
    ("\\dfrac{1}{2}", "1/2"), ("0.50", "0.5"), ("1,000", "1000"), ("\\$18.90", "18.9"),
    ("x = 3", "x=3"), ("1.5\\times10^{3}", "1500"), ("\\boxed{\\boxed{7}}", "7"), ("50\\%", "50"),
    ("2\\frac{1}{2}", "5/2"), ("-\\frac{6}{8}", "-3/4"), ("\\left( 1, 2 \\right)", "(1,2)"), ("\\pi r^2", "\\pi r^2"),
])
def test_normalize(raw, canonical):
    assert verify.normalize(raw) == canonical


def test_normalize_rejects_non_string():
    with pytest.raises(TypeError, match="str"):
        verify.normalize(3)

# ----------------------------------------------------------------------------- score and feedback


@pytest.mark.parametrize("completion,gold,reward,feedback", [
    ("so \\boxed{12}", "12", 1.0, "correct"),
    ("so \\boxed{12}", "\\boxed{12}", 1.0, "correct"),
    ("work...\n#### 72", "72", 1.0, "correct"),
    ("I give up", "12", 0.0, "no final answer found: end with \\boxed{ANSWER}"),
    ("so \\boxed{13}", "12", 0.0, "answer 13 differs from the expected value 12 (wrong value)"),
    ("The answer is 0.333.", "1/3", 0.0, "answer 0.333 is an approximation; give the exact form 1/3"),
    ("\\boxed{(2,1)}", "(1,2)", 0.0, "answer (2,1) has the right entries in the wrong order; expected (1,2)"),
    ("\\boxed{[1,2]}", "[1,2)", 0.0, "answer [1,2] has the wrong interval ends (open vs closed); expected [1,2)"),
    ("\\boxed{2}", "\\pm 2", 0.0, "answer 2 has a different number of values than the expected \\pm 2"),
    ("\\boxed{C}", "B", 0.0, "answer C is the wrong choice; expected B"),
    ("\\boxed{12}", "B", 0.0, "answer 12 is not a choice letter; expected the letter B"),
])
def test_score_feedback(completion, gold, reward, feedback):
    assert verify.score(completion, gold) == (reward, feedback)


def test_score_feedback_is_one_line():
    reward, feedback = verify.score("\\boxed{x\n+\n1}", "x+2")
    assert reward == 0.0 and "\n" not in feedback and "x+1" in feedback and "x+2" in feedback


def test_score_rejects_non_string_gold():
    with pytest.raises(TypeError, match="gold"):
        verify.score("\\boxed{1}", None)


def test_is_equiv_rejects_bad_timeout():
    with pytest.raises(ValueError, match="timeout"):
        verify.is_equiv("1", "1", timeout=0)

# ----------------------------------------------------------------------------- hostile input


def test_code_injection_is_not_run(tmp_path):
    marker = tmp_path / "pwned"
    attacks = [
        "__import__('os').system('touch %s')" % marker,
        "eval(\"open('%s','w')\")" % marker,
        "Symbol('x').__class__.__init__.__globals__",
        "\\input{/etc/passwd}",
        "lambda: open('%s', 'w')" % marker,
    ]
    for attack in attacks:
        assert verify.is_equiv(attack, "1") is False
        reward, feedback = verify.score("\\boxed{%s}" % attack, "1")
        assert reward == 0.0 and feedback
    assert not marker.exists()


@pytest.mark.parametrize("pred", ["9^{9^{9^9}}", "10^{10^{10}}", "100000!", "x^{10^{100}}",
                                  "2^{3^{4^{5}}}", "1e99999", "\\binom{10^{9}}{5}"])
def test_huge_values_are_refused_fast(pred):
    start = time.monotonic()
    reward, feedback = verify.score("\\boxed{%s}" % pred, "1")
    assert reward == 0.0 and feedback != "correct"
    assert time.monotonic() - start < 2.5


def test_long_repeating_decimals_are_refused_not_raised():
    # a repeating decimal is read as a fraction only up to 40 digits a part (int() stops at 4,300)
    long = "0." + "1" * 4400 + "\\overline{3}"
    assert verify.is_equiv(long, "1") is False
    assert verify.score("\\boxed{%s}" % long, "1")[0] == 0.0
    assert verify.is_equiv("0.1\\overline{6}", "1/6") is True


def test_deep_nesting_is_refused_fast():
    deep = "{" * 5000 + "1" + "}" * 5000
    start = time.monotonic()
    assert verify.score("\\boxed{%s}" % deep, "1")[0] == 0.0
    assert verify.is_equiv(deep, "1") is False
    assert verify.is_equiv("(" * 300 + "1" + ")" * 300, "1") is False
    assert time.monotonic() - start < 3


def test_200kb_input_is_refused_fast():
    huge = "1+" * 100_000
    start = time.monotonic()
    reward, feedback = verify.score(huge, "1")
    assert reward == 0.0 and "200000 characters" in feedback
    assert verify.is_equiv(huge, "1") is False
    assert verify.extract_answer("\\boxed{" * 30_000) is None
    assert time.monotonic() - start < 3


@pytest.mark.parametrize("attack", [
    "answer" + " " * 99_000 + "x", "the answer is " + "\\(" * 49_000, "####" * 24_000,
    "\\boxed{" * 14_000, "1," * 49_000, "answer" + "**" * 49_000, "answer is " + "$" * 99_000,
    "answer is " * 9_900, "\\boxed{" + "{" * 99_000, "\\frac{" * 14_000,
])
def test_pathological_completions_are_linear_time(attack):
    # near the completion limit, built to make backtracking regexes or brace scans quadratic
    start = time.monotonic()
    reward, feedback = verify.score(attack, "1")
    assert reward == 0.0 and feedback and "\n" not in feedback
    assert time.monotonic() - start < 2.0


@pytest.mark.parametrize("attack", [
    "$" + "\\$" * 49_000, "answer $" + "\\$" * 49_000, "\\boxed{1} and " * 7_000, "\n~bob" * 19_000,
    "final answer is " + "$1$ and " * 12_000, "\\\\" * 49_000, "1or" * 33_000, "12,\\!" * 19_000,
    "{,}" * 33_000, "x \\approx " * 9_900, "the answer is " + "$a$ is " * 14_000, "\\boxed{1}. " * 8_000,
    "a \u2014 " * 24_000, "x -$1" * 19_000, "1 (since " * 11_000, "1 to " * 24_000, "13. Wait, no, " * 7_000,
    "The answer is 13" + " (since 1 = 1)" * 6_000,
])
def test_new_extraction_rules_stay_linear_time(attack):
    # built against the box grouping, math spans, signatures and separators added for issue 10
    assert verify.is_equiv("x", "x+0")  # a worker up, so only the check itself is timed
    start = time.monotonic()
    reward, feedback = verify.score(attack, "7")
    assert reward == 0.0 and feedback and "\n" not in feedback
    assert time.monotonic() - start < 2.0


def wait_for_idle_workers(n, seconds=60):
    """Let background start-ups finish: until n workers are idle."""
    for _ in range(int(seconds * 10)):
        if len(verify._POOL.idle) >= n:
            return
        time.sleep(0.1)


def test_timeout_kills_and_restarts_worker():
    verify.shutdown_worker()
    assert verify.is_equiv("(x+1)^2", "x^2+2x+1")  # a worker up, and a spare starting
    wait_for_idle_workers(2)
    before = [w.proc for w in verify._POOL.idle]
    assert len(before) == 2 and verify._POOL.running() == 2
    start = time.monotonic()
    # a deadline no worker can meet: the call must come back False, on time
    # (work of several ms: four points of two variables, unlike the pair above, not cached)
    assert verify.is_equiv("\\frac{x^3-y^3}{x-y}", "x^2+xy+y^2", timeout=1e-4) is False
    assert time.monotonic() - start < 1.0
    assert sum(proc.poll() is not None for proc in before) == 1  # killed, not left on the stale request
    wait_for_idle_workers(2)  # its replacement starts in the background
    assert verify._POOL.running() == 2
    assert verify.score("\\boxed{(x+1)^2}", "x^2+2x+1") == (1.0, "correct")


@pytest.mark.skipif(os.name != "posix", reason="process groups are POSIX")
def test_workers_do_not_receive_the_terminals_ctrl_c():
    # a terminal's Ctrl-C goes to its foreground process group; the workers are outside it, so a
    # training step that Ctrl-C lets finish is not scored 0.0 by killed workers
    assert verify.is_equiv("(x+1)^2", "x^2+2x+1")
    wait_for_idle_workers(1)
    for w in verify._POOL.idle:
        assert os.getpgid(w.proc.pid) != os.getpgid(0)


def test_slow_real_work_meets_the_deadline():
    # 150 expressions in opposite orders: unordered matching is quadratic (~10 s of sympy work)
    pred = ",".join("x+%d" % k for k in range(150))
    gold = ",".join("x+%d" % k for k in reversed(range(150)))
    assert verify.is_equiv("x", "x+0")  # worker up, so only the comparison is timed
    start = time.monotonic()
    assert verify.score("\\boxed{%s}" % pred, gold, timeout=0.5) == (
        0.0, "answer %s could not be checked against %s in time; give a simpler closed form"
        % (verify._show(pred), verify._show(gold)))
    assert time.monotonic() - start < 1.5


def test_calls_from_threads():
    pairs = [("(x+1)^2", "x^2+2x+1", True), ("\\frac{1}{\\sqrt2}", "\\frac{\\sqrt2}{2}", True),
             ("[1,2)", "[1,2]", False), ("0.5", "\\frac12", True), ("3\\sqrt2", "2\\sqrt3", False)]
    results, errors = {}, []

    def work(k):
        try:
            pred, gold, _ = pairs[k % len(pairs)]
            results[k] = verify.is_equiv(pred, gold)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert results == {k: pairs[k % len(pairs)][2] for k in range(10)}


def test_a_slow_answer_does_not_starve_other_threads():
    """8 threads of ordinary symbolic checks while a 9th keeps sending an answer that runs out its
    deadline: time spent waiting for a worker must not count against a call's own deadline."""
    pairs = [("(x+1)^2", "x^2+2x+1"), ("\\frac{1}{\\sqrt2}", "\\frac{\\sqrt2}{2}"),
             ("\\sqrt{8}", "2\\sqrt{2}"), ("\\frac{x^2-1}{x-1}", "x+1"), ("[1,2)", "[1, 2)"),
             ("\\sin^2 x + \\cos^2 x", "1"), ("(1, \\frac{1}{2})", "(1, 0.5)")]
    slow_pred = ",".join("x+%d" % k for k in range(150))  # ~10 s of matching: always times out
    slow_gold = ",".join("x+%d" % k for k in reversed(range(150)))
    refused, slow_results, errors = [], [], []
    stop = threading.Event()

    def ordinary(k):
        try:
            for j in range(12):
                pred, gold = pairs[(k + j) % len(pairs)]
                if not verify.is_equiv(pred, gold):
                    refused.append((pred, gold))
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    def slow():
        while not stop.is_set():
            slow_results.append(verify._judge(slow_pred, slow_gold, 1.0))

    slow_thread = threading.Thread(target=slow)
    slow_thread.start()
    time.sleep(0.2)
    threads = [threading.Thread(target=ordinary, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    stop.set()
    slow_thread.join(timeout=60)
    assert not errors
    assert refused == []  # no right answer came back 0.0 because another call was slow
    assert slow_results and all(r == (False, "timeout") for r in slow_results)


def test_fast_path_does_not_start_worker():
    verify.shutdown_worker()
    before = verify._POOL.running()  # 0, unless a replacement was still starting
    assert verify.is_equiv("1,000", "1000") and verify.is_equiv("0.5", "\\frac{1}{2}")
    assert verify._POOL.running() == before

# ----------------------------------------------------------------------------- workers die with their caller

# sympy works on this for minutes (or until memory runs out): a worker stuck in it must still go
SLOW_PRED, SLOW_GOLD = "\\exp(\\exp(\\exp(100)))+1", "\\exp(\\exp(\\exp(100)))"

CALLER = r"""
import sys, threading, time
sys.path.insert(0, %r)
import verify
start, started, say = verify._Worker.start, [], threading.Lock()
def reporting_start(self):
    start(self)
    # workers start from several threads: one write per line, under a lock, or lines interleave
    with say:
        sys.stdout.write("worker %%d\n" %% self.proc.pid)
        sys.stdout.flush()
    started.append(self)
verify._Worker.start = reporting_start
# a long deadline: only the caller's end, not its timeout, may stop the worker
threading.Thread(target=verify.is_equiv, args=(%r, %r), kwargs={"timeout": 300}, daemon=True).start()
while not started:
    time.sleep(0.05)
time.sleep(0.5)  # the request is in, the worker computes
with say:
    print("busy", flush=True)
# hold on until the test has seen every reported worker alive: exiting earlier would let the exit
# cleanup stop an idle spare worker before the test looks at it
sys.stdin.readline()
if sys.argv[1] == "hang":
    time.sleep(300)
""" % (ROOT, SLOW_PRED, SLOW_GOLD)


def alive(pid):
    """Running (a zombie left for a reaper counts as gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def workers_left_after_caller(tmp_path, how):
    script = tmp_path / "caller.py"
    script.write_text(CALLER)
    caller = subprocess.Popen([sys.executable, str(script), how], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    pids = []
    for line in caller.stdout:
        if line.startswith("worker"):
            pids.append(int(line.split()[1]))
        if line.startswith("busy"):
            break
    assert pids and all(alive(p) for p in pids)
    caller.stdin.write("go\n")
    caller.stdin.close()
    if how == "hang":
        caller.kill()  # SIGKILL: no atexit, no cleanup in the caller
    caller.wait(timeout=60)
    give_up = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < give_up:
        time.sleep(0.1)
    left = [p for p in pids if alive(p)]
    for p in left:  # never leave one computing on the test machine
        os.kill(p, 9)
    return left


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_end_when_the_caller_exits_mid_verification(tmp_path):
    assert workers_left_after_caller(tmp_path, "exit") == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_end_when_the_caller_is_sigkilled_mid_verification(tmp_path):
    assert workers_left_after_caller(tmp_path, "hang") == []


@pytest.mark.skipif(not hasattr(__import__("signal"), "setitimer"), reason="needs setitimer")
def test_worker_never_computes_long_past_the_deadline():
    # the caller alive but not stopping it (hung, or stuck itself): the worker's own alarm ends it
    worker = subprocess.Popen([sys.executable, os.path.join(ROOT, "verify.py"), verify.WORKER_FLAG],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout.readline().strip() == "ready"
        worker.stdin.write('{"id": 1, "p": "%s", "g": "%s", "t": 0.2}\n'
                           % (SLOW_PRED.replace("\\", "\\\\"), SLOW_GOLD.replace("\\", "\\\\")))
        worker.stdin.flush()
        start = time.monotonic()
        worker.wait(timeout=0.2 + verify.ALARM_GRACE + 3)  # stdin still open: only the alarm ends it
        assert time.monotonic() - start < 0.2 + verify.ALARM_GRACE + 3
    finally:
        worker.kill()
        worker.wait()


# ----------------------------------------------------------------------------- copied alone


def test_copied_alone_into_empty_folder(tmp_path):
    shutil.copy(os.path.join(ROOT, "verify.py"), tmp_path / "verify.py")
    script = (
        "import sys, threading\n"
        "import verify\n"
        "assert 'torch' not in sys.modules\n"
        "out = []\n"
        "t = threading.Thread(target=lambda: out.append(verify.is_equiv('2\\\\sqrt2', '\\\\sqrt8')))\n"
        "t.start(); t.join()\n"
        "print(out[0], verify.score('so \\\\boxed{\\\\frac{1}{2}}', '0.5'))\n"
    )
    # run from a main module that is not importable (stdin): the worker must not need it
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "-"], input=script, cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "True (1.0, 'correct')"
    cli = subprocess.run([sys.executable, "verify.py", "so \\boxed{0.333}", "\\frac13"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 1, cli.stderr  # exit 1: not equal
    assert "different" in cli.stdout and "approximation" in cli.stdout and "0.333" in cli.stdout
    assert set(os.listdir(tmp_path)) <= {"verify.py", "__pycache__"}  # it wrote nothing else


def test_import_has_no_side_effects():
    code = "import verify, sys; print(verify._POOL.running() == 0, 'sympy' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert run.stdout.strip() == "True False", run.stderr


def test_a_bare_answer_is_taken_whole_not_its_last_number():
    """`python verify.py '\\frac{1}{2}' 0.5` and score() on a bare answer must not read just the '2'."""
    assert verify.extract_answer("\\frac{1}{2}") == "\\frac{1}{2}"
    assert verify.extract_answer("$2\\sqrt{2}$") == "2\\sqrt{2}"
    assert verify.score("\\frac{1}{2}", "0.5")[0] == 1.0
    assert verify.score("(1, 2)", "(1,2)")[0] == 1.0
    # prose still falls back to its last number
    assert verify.extract_answer("I think it is 12 or maybe 13") == "13"
    reward, feedback = verify.score("I do not know", "4")
    assert reward == 0.0 and "no final answer" in feedback


@pytest.mark.parametrize("completion,gold,reward", [
    ("12 + 13 = 25", "25", 1.0),                    # a bare worked sum (SmolLM2's usual reply)
    ("The answer is 12 + 13 = 25.", "25", 1.0),
    ("$7 \\times 8 = 56$", "56", 1.0),
    ("12 + 13 = 26", "25", 0.0),                    # its last side is the answer: a wrong one
    ("x = 5", "5", 1.0),                            # variable equations keep working as before
    ("x = 12 + 13 = 25", "25", 1.0),
    ("2x = 10", "5", 0.0),                          # an equation to solve is not its solution
    # a chain that substitutes a value commits to its plain last side (the demo's level 6)
    ("713 * k = 713 * 0 = 0.", "0", 1.0),
    ("532k = 532 * 0 = 0", "0", 1.0),
    ("f(2) = 2 \\cdot 2 + 1 = 5", "5", 1.0),
    ("713 * k = 713 * 0 = 1", "0", 0.0),            # ... and a wrong last side is wrong
    ("731 x 0 = 0.", "0", 1.0),                     # an x between numbers is a times
    ("12 x 3 = 35", "36", 0.0),
    ("x \\le 2 + 3 = 5", "5", 0.0),                 # a relation is not a worked chain
    ("5! = 120", "120", 1.0),                       # a factorial is arithmetic, not a relation
    ("y = 2x + 1 = 7", "2x + 1", 0.0),              # no plain side in between: an equation
])
def test_bare_numeric_equation_is_its_last_side(completion, gold, reward):
    assert verify.score(completion, gold)[0] == reward


# ----------------------------------------------------------------------------- answers said in words
# What a small model writes around a right answer (issue 27), one rule of verify.py each, and beside
# each the wrong answers of the same shape that must stay refused. The examples are made up; real
# completions of the kit's own runs are in bench/small_model_answers.jsonl.


@pytest.mark.parametrize("completion,gold,reward", [
    # a relation in words states the value after it (_stated_value)
    ("7 + 5 is 12.", "12", 1.0),
    ("7 + 5 equals 12", "12", 1.0),
    ("The answer: 7 + 5 will always equal 12. We used 7 and 5.", "12", 1.0),
    ("p + 4 is 11.", "11", 1.0),
    ("The sum is 12, which is the total of 7 and 5.", "12", 1.0),
    ("7 + 5 is 13.", "12", 0.0),
    ("p + 4 is 2p + 11.", "11", 0.0),                   # an expression, not the number
    ("The final answer is 7 + 5 which is simply 12.", "12", 1.0),
    ("The answer is 7 + 5, which equals 11.", "12", 0.0),
    ("The answer is 7 + 5, which equals 11.", "11", 0.0),  # said of 7 + 5 it is false
    ("The answer is 90, which is 0.", "0", 0.0),
    # an empty box: the answer beside it (_boxed_answer), or the chain the text committed to before it
    ("So the result is \\boxed{} 12.", "12", 1.0),
    ("\\boxed{} 7 + 5 = 12", "12", 1.0),
    ("It comes to \\boxed{}, which is 12.", "12", 1.0),
    ("The value in \\boxed{} is 12.", "12", 1.0),
    ("The result, in \\boxed{}: 7 + 5 = 12", "12", 1.0),
    ("7 + 5 = 12.\n\nPut it in \\boxed{}.", "12", 1.0),
    ("The answer is 12. To keep it in \\boxed{}, write it there.", "12", 1.0),
    ("\\boxed{} 7 + 5 = 13", "12", 0.0),
    ("Adding 7 and 5 gives \\boxed{}.", "12", 0.0),     # no answer anywhere
    ("Working out 0 + 12 gives \\boxed{}.", "12", 0.0),  # the question's own number is no answer
    ("7 + 5 =\n\\boxed{}", "12", 0.0),                # an '=' with nothing after it
    # an answer sentence with a word in it (_affirmed, _conditioned, _remarked, '... is the answer')
    ("The answer is really 7 + 5 = 12.", "12", 1.0),
    ("The final answer is clearly 12.", "12", 1.0),
    ("Adding them we reach 12, which is the final answer. Both 7 and 5 are odd.", "12", 1.0),
    ("The answer is 12 when p = 8.", "12", 1.0),
    ("The answer is indeed 0, as 318 is", "0", 1.0),
    ("So the final answer will be 12. We used 7 and 5.", "12", 1.0),
    ("The correct answer is 7 + 5 = 12, but in words,", "12", 1.0),
    ("7 + 5 = 12\n\nThe answer is correct.", "12", 1.0),  # a judgement, not an answer
    ("7 + 5 = 12\n\nThe answer is tricky. However, we", "12", 0.0),  # doubt is no judgement
    ("7 + 5 = 11\n\nThe answer is correct.", "12", 0.0),
    ("The answer is not 12.", "12", 0.0),
    ("The answer is about 12.", "12", 0.0),
    ("The answer is negative 12.", "12", 0.0),
    ("The answer is 12, but actually 13.", "12", 0.0),
    ("The answer is 12.\n\nThis is not possible, since 12 is odd.", "12", 0.0),  # taken back
    # a worked chain followed by a word, said twice, or quoted (_clean_unit, _restated, _quoted)
    ("7 + 5 = 12 marbles.", "12", 1.0),
    ("7 + 5 = 12 units.", "12", 1.0),
    ("The answer is 12 marbles.", "12", 1.0),
    ("7 + 5 = 12, so 7 + 5 = 12.", "12", 1.0),
    ("7 + 5 = 12, and 7 + 5 = 12.", "12", 1.0),
    ('"7 + 5 = 12"', "12", 1.0),
    ("7 + 5 = 12, so 7 + 5 = 13.", "12", 0.0),
    ("7 + 5 = 12 thousand.", "12", 0.0),
    ("So it comes to 12 squared.", "12", 0.0),
    # a boxed expression in the question's letter, continued to a number and restated
    ("\\boxed{p + 4} = 7 + 4 = 11. So the answer is 11.", "11", 1.0),
    ("\\boxed{p + 4} = 7 + 4 = 11.", "11", 1.0),
    ("\\boxed{p + 4}. So the answer is 11.", "11", 1.0),
    ("\\boxed{p + 4} = 7 + 4 = 12.", "11", 0.0),
    ("\\boxed{12}. So the answer is 13.", "13", 1.0),  # a later answer sentence replaces the box
    ("\\boxed{12}. So the answer is 13.", "12", 0.0),
    # an equation stating the value of an expression in one letter, against a number (_equation_value)
    ("318 * k = 0.", "0", 1.0),
    ("318 * k x 0 = 0", "0", 1.0),
    ("p + 4 = 11", "11", 1.0),
    ("p + 4 = 2p + 11", "11", 0.0),
    ("3p + 11", "11", 0.0),
    ("2p + 22", "22", 0.0),
    ("2x - y + 8 = 0", "0", 0.0),                       # an equation to solve, not a value
    ("x^2 - 4x + 4 = 0", "0", 0.0),
    ("No, the answer is not 4 + 0 = 4.", "4", 0.0),
    # numbers that only contain the gold
    ("3.12", "12", 0.0),
    ("So we get 19.12.12.", "12", 0.0),
    ("The train left at 12:00.", "0", 0.0),
    ("We get 412", "12", 0.0),
    # a false chain states no value
    ("963 * 0 = 96.", "96", 0.0),
    ("963 * 0 = 96.", "0", 0.0),
    # an operation still to do: the question said back ('Compute 18 - 3.') is no answer
    ("18 - 3", "15", 0.0),
    ("The answer is (9 + 6).", "15", 0.0),
    ("\\boxed{3 \\cdot 5}", "15", 0.0),
    ("18 - 3 = 15", "15", 1.0),
    ("18 - 3 ≈ 15.", "15", 1.0),                        # ... but said with its value, a chain
    ("18 - 3 ≈ 14.", "15", 0.0),
    ("\\boxed{2^{4}}", "16", 0.0),                        # a power is an operation too
    ("\\boxed{6/8}", "3/4", 1.0),                         # ... but a/b of two integers is a number
])
def test_answers_said_in_words(completion, gold, reward):
    assert verify.score(completion, gold)[0] == reward


def test_an_equation_stays_an_equation_between_answers():
    # score() reads a completion's 'p + 4 = 11' as the value it states; is_equiv compares two answers
    assert verify.score("p + 4 = 11", "11")[0] == 1.0
    assert verify.is_equiv("p + 4 = 11", "11") is False
    assert verify.score("x + 2y = 5", "x + 2y = 5")[0] == 1.0
    assert verify.score("x + 2y = 5", "x + 2y = 6")[0] == 0.0


@pytest.mark.parametrize("completion,read", [
    ("7 + 5 is 12.", "7 + 5 = 12."),
    ("p + 4 is 11.", "11."),
    ("So the result is \\boxed{} 12.", "12"),
    ("It comes to \\boxed{}, which is 12.", "12"),
    ("7 + 5 = 12.\n\nPut it in \\boxed{}.", "7 + 5 = 12"),
    ("Adding 7 and 5 gives \\boxed{}.", ""),
    ("The answer is really 7 + 5 = 12.", "7 + 5 = 12"),
    ("The answer is 12 when p = 8.", "12"),
    ("Adding them we reach 12, which is the final answer.", "12"),
    ('"7 + 5 = 12"', "7 + 5 = 12"),
    ("7 + 5 = 12, so 7 + 5 = 12.", "7 + 5 = 12"),
    ("\\boxed{p + 4} = 7 + 4 = 11.", "p + 4 = 7 + 4 = 11"),
    ("So we get 19.12.12.", None),
])
def test_what_is_read_from_words(completion, read):
    assert verify.extract_answer(completion) == read


@pytest.mark.parametrize("completion,gold,feedback", [
    ("So the result is \\boxed{} 13.", "12", "answer 13 differs from the expected value 12 (wrong value)"),
    ("Adding 7 and 5 gives \\boxed{}.", "12",
     "the final \\boxed{} is empty and no answer stands beside it; put the answer inside it"),
    ("963 * 0 = 96.", "0",
     "answer 963*0=96 is not true: its sides have different values; end with the right value"),
    ("The answer is 7 + 5, which equals 11.", "12",
     "answer 7+5=11 is not true: its sides have different values; end with the right value"),
    ("p + 4 = 13", "11", "answer p+4=13 differs from the expected value 11 (wrong value)"),
    ("18 - 3", "15", "an operation still to do: 18 - 3; give the number it comes to"),
])
def test_feedback_says_what_was_read(completion, gold, feedback):
    assert verify.score(completion, gold) == (0.0, feedback)


def test_false_chains_are_read_by_exact_integer_arithmetic():
    assert verify._arithmetic_value("(3 - 5) * 2 + 48 / 2") == 20
    for not_plain in ["2^3", "3.5", "\\frac{1}{2}", "7/0", "k * 0", "((1)", "1 2"]:
        assert verify._arithmetic_value(not_plain) is None
    assert verify._false_chain("12 + 13 = 26") and not verify._false_chain("12 + 13 = 25")
    assert verify._false_chain("963 * 0 = 96") and not verify._false_chain("963 * k = 963 * 0 = 0")
    assert not verify._false_chain("z = 3 + 3 = 2")  # a chain that starts with a name: its last side
    # a run-on chain goes on from the value before it: 13, then 13 - 2 = 11
    assert not verify._false_chain("9 + 4 = 13 - 2 = 11") and verify._false_chain("9 + 4 = 13 - 2 = 12")
    assert verify._false_chain("9 + 4 = 13 - 2")  # it must end on a value


# ----------------------------------------------------------------------------- function names


@pytest.mark.parametrize("pred,gold,equal", [
    ("\\det\\begin{pmatrix}1 & 2 \\\\ 3 & 4\\end{pmatrix}", "-2", True),
    ("\\det(\\begin{bmatrix}2 & 0 \\\\ 0 & 3\\end{bmatrix})", "6", True),
    ("\\operatorname{det}\\begin{pmatrix}2 & 0 \\\\ 0 & 3\\end{pmatrix}", "5", False),
    ("\\det 5", "5", False),                                    # det takes a matrix
    ("\\det\\begin{pmatrix}1 & 2\\end{pmatrix}", "0", False),   # ... a square one
    ("\\arcsec 2", "\\frac{\\pi}{3}", True),
    ("arcsec(2)", "\\frac{\\pi}{3}", True),                    # a bare name reads as its command
    ("\\cos 60^\\circ", "\\frac12", True),                      # a trig function takes degrees
    ("\\cosh 0", "1", True),
])
def test_every_function_name_is_read_the_same_everywhere(pred, gold, equal):
    assert verify.is_equiv(pred, gold) is equal


def test_function_table_feeds_the_regexes():
    # the names are in one table; the regexes that need them are built from it
    for name, (_, use) in verify._FUNCTIONS.items():
        assert bool(verify._TRIG_RE.fullmatch("\\" + name)) == (use == "trig")
        if use == "letter":
            assert verify._clean("%s(x) = x^2" % name) == "%s(x) = x^2" % name  # kept whole
    assert verify._clean("y(x) = x^2") == "x^2"


# ----------------------------------------------------------------------------- units


@pytest.mark.parametrize("pred,gold,equal", [
    ("15 cm^3", "15 cm^2", False),                          # both give a unit: it must agree
    ("15\\mbox{ cm}^3", "15\\mbox{ cm}^2", False),
    ("15\\text{ cm}^2", "15 cm²", True),                    # one unit, however it is written
    ("15 square cm", "15\\text{ cm}^2", True),
    ("15 sq. centimeters", "15 cm^{2}", True),
    ("16 cubic feet", "16\\text{ ft}^3", True),
    ("5 inches", "5\\text{ in.}", True),
    ("15\\text{ cm}^2", "15", True),                        # a unit on one side only is no error
    ("15", "15\\text{ cm}^2", True),
    ("15 cm^2", "16", False),                               # ... and the value still counts
    ("1 m", "100 cm", False),                               # units are not converted
    ("100 cm", "1 m", False),
    ("1 m", "1 meter", True),                               # one unit, spelled two ways
    ("3 hours", "3 hrs", True),
    ("2\\sqrt{3}\\text{ cm}", "\\sqrt{12}\\text{ cm}", True),  # a unit after a symbolic value
    ("2\\sqrt{3}\\text{ cm}", "\\sqrt{12}\\text{ m}", False),
    ("5 apples", "5 cm", True),                             # what was counted is not a unit
    ("2m", "2 m", False),                                   # 2m is 2 times m, not 2 metres
])
def test_units_must_agree_when_both_answers_give_one(pred, gold, equal):
    assert verify.is_equiv(pred, gold) is equal


def test_a_unit_mismatch_says_so():
    reward, feedback = verify.score("so the area is \\boxed{15\\text{ cm}^3}", "15\\text{ cm}^2")
    assert reward == 0.0
    assert feedback == ("answer 15 cm^3 is in a different unit than the expected 15 cm^2; "
                        "units are not converted")
    assert verify.normalize("15\\text{ cm}^2") == "15"  # the normal form is still the bare value
