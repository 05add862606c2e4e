"""verify.py - check a model's final math answer against a gold answer, safely, and say why.

Use it from Python (the names below come from `from verify import ...`):

    extract_answer("... so the total is \\boxed{\\frac{3}{4}}.")   # -> '\\frac{3}{4}'
    normalize("\\dfrac{3}{4}")                                     # -> '3/4'
    is_equiv("0.75", "\\frac34")                                   # -> True
    score("The answer is 0.333.", "1/3")
    # -> (0.0, 'answer 0.333 is an approximation; give the exact form 1/3')

or from the shell:  python verify.py PRED GOLD

How it decides, cheapest first:
  1. extract the final answer (last \\boxed{}, GSM8K '#### x', 'the answer is x', last number);
  2. clean LaTeX noise (\\left, \\text{units}, \\$, %, degrees, thousands separators, ...);
  3. plain numbers (integers, decimals, fractions, mixed numbers, 1.5e3) are compared exactly
     with fractions.Fraction, in this process, without sympy - this is the path every GSM8K-like
     reward takes;
  4. anything else (roots, pi, tuples, intervals, sets, matrices, equations, expressions) goes to
     a small worker process that reads the answers with our own LaTeX reader into sympy objects
     built from a whitelist and compares them, under a hard deadline: a call that runs past its
     timeout kills the worker (a fresh one starts on the next call) and counts as not equal.

Safety: model output is never evaluated as Python - no eval/exec, no sympify/parse_expr on raw
text. Sizes are bounded (answer length, nesting depth, power and factorial sizes), and the
deadline is enforced by the parent process, so it holds from any thread (no signal.alarm).
The worker is `python verify.py --verify-worker` started with subprocess (fork+exec), so it
imports only this file and sympy - never the caller's __main__ or torch - and it is started
lazily on the first symbolic comparison and stopped at exit (or by shutdown_worker()).

Numbers are equal when exactly equal, or when a decimal agrees with the other side to about
6 significant digits (0.333333 = 1/3, but 0.333 != 1/3 and 1/2004! != 1/2006!).
"""
import atexit
import json
import math
import os
import queue
import re
import subprocess
import sys
import threading
import time
import warnings
from fractions import Fraction

MAX_COMPLETION_CHARS = 100_000  # longer completions are rejected before any parsing
MAX_ANSWER_CHARS = 1_000        # a final answer longer than this is not a final answer
MAX_DEPTH = 40                  # bracket / operator nesting the reader accepts
MAX_DIGITS = 10_000             # largest exact number (in digits) a power may produce
MAX_FACTORIAL = 3_000           # n! allowed up to this n (3000! has ~9,100 digits)
WORKER_FLAG = "--verify-worker"
START_TIMEOUT = 60.0            # seconds a fresh worker may take to import sympy

# ----------------------------------------------------------------------------- extraction

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\b")
_GSM_RE = re.compile(r"####\s*([^\n]+)")
_ANSWER_IS_RE = re.compile(
    r"answer\s*(?:\*\*\s*)?(?:is\s*:?|:)\s*(?:\*\*\s*)?([^\n]+)", re.IGNORECASE)
_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?")
_BRACE_RE = re.compile(r"\\.|[{}]", re.DOTALL)


def _braced(text, start):
    """Content of the {...} group opening at text[start], or None if it never closes.

    The scan stops after 10 answer-lengths: a longer group comes back cut, as a too-long answer."""
    depth, stop = 0, start + MAX_ANSWER_CHARS * 10 + 2
    for m in _BRACE_RE.finditer(text, start, min(stop, len(text))):
        tok = m.group()
        if tok == "{":
            depth += 1
        elif tok == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1:m.start()]
    return text[start + 1:stop] if len(text) > stop else None


def _last_boxed(text):
    """Content of the last closed \\boxed{...} / \\fbox{...} (or '\\boxed 5'), else None."""
    starts = [m.end() for m in _BOX_RE.finditer(text)]
    for end in reversed(starts[-20:]):  # truncated output: fall back to an earlier box
        j = end
        while j < len(text) and text[j] == " ":
            j += 1
        if j < len(text) and text[j] == "{":
            inner = _braced(text, j)
            if inner is not None:
                return inner
        elif j > end:  # '\boxed 5' (TeX allows an unbraced argument)
            m = re.match(r"[^\s$]+", text[j:])
            if m:
                return m.group()
    return None


def _clean_phrase(phrase):
    """Trim the tail of 'the answer is ...' down to the answer itself."""
    phrase = phrase[:MAX_ANSWER_CHARS]  # also keeps the searches below linear-time
    math_part = re.search(r"\$+([^$]+)\$+|\\\((.+?)\\\)", phrase)
    if math_part:
        return (math_part.group(1) or math_part.group(2)).strip()
    phrase = re.split(r"\.(?:\s|$)|;|\s+(?:because|since|which)\s", phrase)[0]
    return phrase.strip(" *.:")


def extract_answer(text):
    """The final answer a completion (or a GSM8K/MATH gold field) commits to, or None."""
    if not isinstance(text, str) or not text.strip():
        return None
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    gsm = _GSM_RE.findall(text)
    if gsm:
        return gsm[-1].strip().replace(",", "")
    said = _ANSWER_IS_RE.findall(text)
    if said and _clean_phrase(said[-1]):
        return _clean_phrase(said[-1])
    bare = text.strip().strip("$").strip()
    if _looks_bare(bare):  # the whole text is the answer: '\\frac{1}{2}', 'x = 3', '(B)'
        return bare
    numbers = _NUMBER_RE.findall(text)
    if numbers:
        return numbers[-1].strip(",").replace(" ", "")
    return None


_PROSE_RE = re.compile(r"(?<!\\)\b[A-Za-z]{3,}\s+[A-Za-z]{2,}\b")


def _looks_bare(s):
    """A short one-line answer with no prose in it (so not the last number of a sentence)."""
    return (0 < len(s) <= 100 and "\n" not in s and not _PROSE_RE.search(s)
            and (len(s) <= 3 or re.search(r"[\d\\]", s) is not None))

# ----------------------------------------------------------------------------- cleaning

_TEXT_CMD_RE = re.compile(
    r"\\(?:text|textbf|textit|textrm|textnormal|mathrm|mathbf|mathit|mbox|operatorname)\s*\{([^{}]*)\}")
_UNIT_WORDS = (
    "cm|mm|km|m|meters?|metres?|centimeters?|kilometers?|inches|inch|in|feet|foot|ft|yards?|miles?|"
    "units?|square units|sq units|degrees?|dollars?|cents?|hours?|hrs?|minutes?|mins?|seconds?|"
    "sec|s|days?|weeks?|months?|years?|kg|g|grams?|pounds?|lbs?|liters?|litres?|ml|gallons?|"
    "people|students|apples|points|mph|km/h|percent")
_TRAILING_UNIT_RE = re.compile(r"([-+]?[\d.,]*\d(?:/\d+)?)\s*(?:%s)(?:\^\{?[23]\}?)?" % _UNIT_WORDS)
_SPACE_RE = re.compile(r"(?<!\\)\\[,;:! ]|\\quad|\\qquad|~|[\u2009\u202f\u00a0]")
_DROP_RE = re.compile(
    r"\\left(?![a-z])|\\right(?![a-z])|\\[bB]ig[lr]?(?![a-z])|\\displaystyle|\\limits|"
    r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|°|\\degree|\\%|%|\\\$|\$")
_MATH_DELIMS_RE = re.compile(r"^\\\(|\\\)$|^\\\[|\\\]$")
_AND_OR_RE = re.compile(r"\s+(?:and|or)\s+")
_TRIG_RE = re.compile(r"\\(?:sin|cos|tan|sec|csc|cot)(?![a-z])")
_DEGREE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|°)")
_PREFIX_RE = re.compile(r"^\s*(?:[A-Za-z]\s*\\in(?![a-z])|[A-Za-z]\s*\(\s*[A-Za-z]\s*\)\s*=(?!.*=))\s*")
_UNICODE = {"−": "-", "–": "-", "×": r"\times ", "·": r"\cdot ", "÷": r"\div ", "π": r"\pi ",
            "√": r"\sqrt ", "∞": r"\infty ", "≤": r"\le ", "≥": r"\ge ", "≠": r"\ne ",
            "±": r"\pm ", "∪": r"\cup ", "∓": r"\mp "}
_END = r"(?![A-Za-z])"  # end of a TeX command name (\b fails in '\tfrac34')
_ALIASES = [(re.compile(p.replace("END", _END)), r) for p, r in [
    (r"\\[dtc]fracEND", r"\\frac"), (r"\\[dt]binomEND", r"\\binom"),
    (r"\\leq?slantEND|\\leqEND", r"\\le"), (r"\\geq?slantEND|\\geqEND", r"\\ge"),
    (r"\\neqEND", r"\\ne"), (r"\\lbraceEND", r"\\{"), (r"\\rbraceEND", r"\\}"),
    (r"\\ltEND", "<"), (r"\\gtEND", ">"), (r"\{,\}", ","), (r"\\infinEND", r"\\infty"),
    (r"\\(?:l|c)?dotsEND", r"\\ldots"),
]]
_THOUSANDS_RE = re.compile(r"(?<![\d.,])\d{1,3}(?:,\d{3})+(?![\d,])(?:\.\d+)?")
_SPACED_INT_RE = re.compile(r"-?\d{1,3}(?: \d{3})+")


def _unwrap_text(s):
    """\\text{...}: a trailing one after a value is a unit (dropped), otherwise keep its words."""
    for _ in range(20):
        m = _TEXT_CMD_RE.search(s)
        if not m:
            return s
        inner = m.group(1).strip()
        is_unit = m.end() == len(s) and m.start() > 0 and re.fullmatch(r"[A-Za-z ./^\d]*", inner)
        if inner in ("and", "or"):
            s = s[:m.start()] + "," + s[m.end():]
        elif is_unit and not re.search(r"[=,]\s*$", s[:m.start()]):
            s = s[:m.start()]
        else:
            s = s[:m.start()] + inner + s[m.end():]
    return s


def _clean(answer):
    """LaTeX-noise-free form of a bare answer; the string the comparisons read."""
    s = answer.strip()
    for _ in range(5):  # nested \boxed{\boxed{..}} and boxes inside a gold solution
        if "\\boxed" not in s and "\\fbox" not in s:
            break
        boxed = _last_boxed(s)
        if boxed is None:
            break
        s = boxed.strip()
    if not s.isascii():
        for a, b in _UNICODE.items():
            s = s.replace(a, b)
        s = _SPACE_RE.sub(" ", s)  # thin and no-break spaces
    if s.endswith(".") and not s.endswith("..."):
        s = s[:-1]
    if "\\" in s or "{" in s:  # LaTeX: most plain answers skip all of this
        s = _MATH_DELIMS_RE.sub("", s).strip()
        if _TRIG_RE.search(s):  # \cos 60^\circ: inside a trig function a degree is pi/180
            s = _DEGREE_RE.sub(r"(\1\\pi/180)", s)
        s = _SPACE_RE.sub(" ", s)
        for pat, rep in _ALIASES:
            s = pat.sub(rep, s)
        s = _unwrap_text(s)
    s = _DROP_RE.sub("", s)
    if "=" in s or "\\in" in s:
        s = _PREFIX_RE.sub("", s)
    s = s.strip()
    unit = _TRAILING_UNIT_RE.fullmatch(s)  # '5 cm' -> '5' (only after a plain number: 2m stays 2m)
    if unit:
        s = unit.group(1)
    if " " in s:
        s = _AND_OR_RE.sub(",", s)
    if _SPACED_INT_RE.fullmatch(s):
        s = s.replace(" ", "")
    if "," in s and not s.startswith(("(", "[", "\\{", "\\langle")):  # (1,100) is a pair
        s = _THOUSANDS_RE.sub(lambda m: m.group().replace(",", ""), s)
    return s.strip().rstrip(".").strip()

# ----------------------------------------------------------------------------- plain numbers

_PLAIN_RE = re.compile(r"[+-]?\d+(?:\.\d+)?")
_NUM = r"[+-]?(?:\d+\.?\d*|\.\d+)"
_DECIMAL_RE = re.compile(r"(%s)(?:\s*(?:e|E|\\times\s*10\^|\*\s*10\^|\\cdot\s*10\^)\s*\{?\s*([+-]?\d{1,3})\s*\}?)?" % _NUM)
_FRAC_RE = re.compile(r"([+-]?)\s*\\frac\s*(?:\{\s*(\d+)\s*\}|(\d))\s*(?:\{\s*(\d+)\s*\}|(\d))")
_SLASH_RE = re.compile(r"([+-]?\d+)\s*/\s*(\d+)")
_MIXED_RE = re.compile(r"([+-]?\d+)\s*(?:\\frac\s*(?:\{\s*(\d+)\s*\}|(\d))\s*(?:\{\s*(\d+)\s*\}|(\d))"
                       r"|\s(\d+)\s*/\s*(\d+))")
_VAR_PREFIX_RE = re.compile(r"([A-Za-z])\s*=\s*(?!=)")


def _plain_number(s):
    """(Fraction, is_decimal) for a cleaned plain number (also 'x = 3'), else None."""
    if len(s) > 400:  # longer digit strings are not 'plain' (and int() caps at 4300 digits)
        return None
    m = _DECIMAL_RE.fullmatch(s)
    if m:
        value = Fraction(m.group(1))
        if m.group(2):
            value *= Fraction(10) ** int(m.group(2))
        return value, "." in m.group(1)
    m = _FRAC_RE.fullmatch(s)
    if m:
        den = int(m.group(4) or m.group(5))
        if den == 0:
            return None
        value = Fraction(int(m.group(2) or m.group(3)), den)
        return (-value if m.group(1) == "-" else value), False
    m = _SLASH_RE.fullmatch(s)
    if m:
        return (Fraction(int(m.group(1)), int(m.group(2))), False) if int(m.group(2)) else None
    m = _MIXED_RE.fullmatch(s)
    if m:  # 2\frac{1}{2} and '2 1/2' are mixed numbers (2.5), as in textbook answers
        whole = int(m.group(1))
        num = int(m.group(2) or m.group(3) or m.group(6))
        den = int(m.group(4) or m.group(5) or m.group(7))
        if den == 0 or num >= den:
            return None
        part = Fraction(num, den)
        return (whole - part if m.group(1).startswith("-") else whole + part), False
    return None


def _sig6_close(a, b):
    """True when a and b (Fractions) agree to about 6 significant digits."""
    mag = max(abs(a), abs(b))
    if mag == 0:
        return True
    exp10 = math.floor(math.log10(mag.numerator) - math.log10(mag.denominator))
    return abs(a - b) <= Fraction(1, 2) * Fraction(10) ** (exp10 - 5)


def _compare_fractions(p, g):
    """(equal, reason) for two plain numbers given as (Fraction, is_decimal)."""
    (a, a_dec), (b, b_dec) = p, g
    if a == b:
        return True, "equal"
    if (a_dec or b_dec) and _sig6_close(a, b):
        return True, "equal"
    if a_dec and not b_dec and abs(a - b) <= abs(b) / 100:
        return False, "approximation"
    return False, "wrong value"


def normalize(answer):
    """Canonical string form of a bare answer: '\\dfrac{1}{2}' -> '1/2', '1,000' -> '1000'."""
    if not isinstance(answer, str):
        raise TypeError("normalize() needs a str answer, got %s" % type(answer).__name__)
    s = _clean(answer[:MAX_ANSWER_CHARS * 10])
    var = _VAR_PREFIX_RE.match(s)
    num = _plain_number(s[var.end():] if var else s)
    if num is None:  # drop spaces, except those that keep '\pi r' from becoming '\pir'
        return re.sub(r"\s+", " ", re.sub(r"(?<![A-Za-z0-9])\s+|\s+(?![A-Za-z0-9])", "", s))
    value, is_decimal = num
    if value.denominator == 1:
        text = str(value.numerator)
    elif is_decimal:  # a decimal stays a decimal, without trailing zeros
        places = 0
        while (value * 10 ** places).denominator != 1:
            places += 1
        digits = str(abs(value.numerator * 10 ** places // value.denominator)).rjust(places + 1, "0")
        text = ("-" if value < 0 else "") + digits[:-places] + "." + digits[-places:]
    else:
        text = "%d/%d" % (value.numerator, value.denominator)
    return (s[:var.end()].replace(" ", "") + text) if var else text

# ----------------------------------------------------------------------------- the LaTeX reader
# Everything below up to the worker runs inside the worker process: it imports sympy lazily.


class TooLarge(ValueError):
    """The answer is too long, too deep or too big to check exactly."""


class Unreadable(ValueError):
    """The answer is not math this reader understands."""


_TOKEN_RE = re.compile(r"""
    (?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+(?![A-Za-z]))?)
  | (?P<cmd>\\[A-Za-z]+|\\[{}|])
  | (?P<word>[A-Za-z]+)
  | (?P<op>[-+*/^_()\[\]{}=<>!|,])
  | (?P<space>\s+)
""", re.VERBOSE)
_FUNCS = {"sin", "cos", "tan", "sec", "csc", "cot", "arcsin", "arccos", "arctan", "sinh",
          "cosh", "tanh", "ln", "log", "exp", "det"}
_GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta",
          "vartheta", "iota", "kappa", "lambda", "mu", "nu", "xi", "rho", "sigma", "tau",
          "upsilon", "phi", "varphi", "chi", "psi", "omega", "Gamma", "Delta", "Theta",
          "Lambda", "Xi", "Sigma", "Phi", "Psi", "Omega"}


def _tokenize(s):
    """List of (kind, text) tokens; anything outside the whitelist is Unreadable."""
    tokens, pos = [], 0
    while pos < len(s):
        m = _TOKEN_RE.match(s, pos)
        if not m:
            raise Unreadable("unexpected character %r" % s[pos])
        pos = m.end()
        kind, text = m.lastgroup, m.group()
        if kind == "space":
            continue
        if kind == "num" and re.search(r"[eE][+-]?\d{4,}", text):
            raise TooLarge("exponent too large")
        if kind == "word":
            if text == "sqrt":
                tokens.append(("cmd", "sqrt"))
            elif text in _FUNCS:
                tokens.append(("func", text))
            elif text in ("pi", "infty", "inf", "infinity", "oo"):
                tokens.append(("const", "\\pi" if text == "pi" else "\\infty"))
            else:
                tokens.extend(("var", ch) for ch in text)  # 'xy' is x*y
            continue
        if kind == "cmd":
            name = text[1:]
            if name in ("frac", "sqrt", "binom", "lfloor", "rfloor", "lceil", "rceil"):
                tokens.append(("cmd", name))
            elif name in _FUNCS or name in ("arcsec", "arccsc", "arccot"):
                tokens.append(("func", name))
            elif name in _GREEK:
                tokens.append(("var", name))
            elif name in ("pi", "infty"):
                tokens.append(("const", text))
            elif name in ("cdot", "times", "ast"):
                tokens.append(("op", "*"))
            elif name == "div":
                tokens.append(("op", "/"))
            elif name == "|":
                tokens.append(("op", "|"))
            elif name in ("{", "}"):
                tokens.append(("op", "(" if name == "{" else ")"))
            else:
                raise Unreadable("unknown command %s" % text)
            continue
        if text in "{}":  # TeX groups read like parentheses
            text = "(" if text == "{" else ")"
        tokens.append((kind, text))
    return tokens


class _Reader:
    """Recursive-descent reader: tokens -> sympy expression, with depth and size limits."""

    def __init__(self, text, sp):
        self.sp = sp  # the sympy module, passed in so this file imports it only in the worker
        self.toks = _tokenize(text)
        self.i = 0
        self.depth = 0
        self.in_abs = 0
        self.has_decimal = False

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else ("end", "")

    def take(self, text=None):
        tok = self.peek()
        if text is not None and tok[1] != text:
            raise Unreadable("expected %r, found %r" % (text, tok[1] or "end"))
        self.i += 1
        return tok

    def read(self):
        e = self.expr()
        if self.peek()[0] != "end":
            raise Unreadable("unexpected %r" % self.peek()[1])
        return e

    def expr(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise TooLarge("nested too deeply")
        sign = 1
        while self.peek() in (("op", "+"), ("op", "-")):
            sign = -sign if self.take()[1] == "-" else sign
        value = sign * self.term()
        while self.peek()[0] == "op" and self.peek()[1] in ("+", "-"):
            op = self.take()[1]
            t = self.term()
            value = value + t if op == "+" else value - t
        self.depth -= 1
        return value

    def starts_atom(self):
        kind, text = self.peek()
        if kind in ("num", "var", "func", "const", "cmd"):
            return text not in ("rfloor", "rceil")
        return kind == "op" and (text in "([" or (text == "|" and not self.in_abs))

    def term(self):
        value = self.unary()
        while True:
            kind, text = self.peek()
            if kind == "op" and text in ("*", "/"):
                self.take()
                rhs = self.unary()
                if text == "/":
                    if rhs == 0:
                        raise Unreadable("division by zero")
                    value = value / rhs
                else:
                    value = value * rhs
            elif self.starts_atom():  # implicit product: 2x, 2\sqrt{3}, (x+1)(x-1)
                value = value * self.power()
            else:
                return value

    def unary(self):
        if self.peek() == ("op", "-"):
            self.take()
            return -self.unary()
        if self.peek() == ("op", "+"):
            self.take()
            return self.unary()
        return self.power()

    def power(self):
        base = self.postfix()
        if self.peek() == ("op", "^"):
            self.take()
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise TooLarge("nested too deeply")
            exponent = self.unary() if self.peek()[1] == "-" else self.power()
            self.depth -= 1
            return self.safe_pow(base, exponent)
        return base

    def safe_pow(self, base, exponent):
        """base**exponent, refusing exact results with more than MAX_DIGITS digits."""
        sp = self.sp
        if exponent.is_Number and base.is_Number and base.is_Rational and exponent.is_Rational:
            size = max(abs(base.p), abs(base.q))
            if size > 1 and abs(exponent) * math.log10(size) > MAX_DIGITS:
                raise TooLarge("power too large")
        elif exponent.is_Number and abs(exponent) > 10 ** 6:
            raise TooLarge("exponent too large")
        elif not exponent.is_Number and base.is_Number and abs(base) not in (0, 1):
            bound = exponent.evalf(15) if not exponent.free_symbols else None
            if bound is not None and bound.is_real and abs(bound) > 10 ** 6:
                raise TooLarge("power too large")
        return sp.Pow(base, exponent)

    def postfix(self):
        value = self.atom()
        while self.peek() == ("op", "!"):
            self.take()
            if value.is_Number:
                if not (value.is_Integer and 0 <= value <= MAX_FACTORIAL):
                    raise TooLarge("factorial too large")
            value = self.sp.factorial(value)
        return value

    def group(self):
        """A TeX argument: {expr}, or a single digit / letter / command (\\frac12)."""
        kind, text = self.peek()
        if kind == "op" and text == "(":
            return self.paren()
        if kind == "num" and len(text) > 1 and text[0].isdigit():
            self.toks[self.i] = ("num", text[1:])  # \frac12: the arguments are 1 and 2
            return self.number(text[0])
        return self.atom()

    def paren(self):
        opener = self.take()[1]
        value = self.expr()
        closer = self.take()[1]
        if closer not in (")", "]"):
            raise Unreadable("unbalanced %s" % opener)
        return value

    def number(self, text):
        # decimals become exact rationals; the flag lets 0.333333 still match 1/3
        self.has_decimal = self.has_decimal or "." in text
        value = Fraction(text)
        return self.sp.Rational(value.numerator, value.denominator)

    def atom(self):
        sp = self.sp
        kind, text = self.take()
        if kind == "num":
            return self.number(text)
        if kind == "var":
            name = text
            if self.peek() == ("op", "_"):  # x_1, a_{10}
                self.take()
                sub = self.take()
                if sub[1] == "(":
                    parts = []
                    while self.peek()[1] not in (")", ""):
                        parts.append(self.take()[1])
                    self.take(")")
                    sub = ("", "".join(parts))
                name = "%s_%s" % (name, sub[1])
                return sp.Symbol(name)
            if name == "e":
                return sp.E
            if name == "i":
                return sp.I
            return sp.Symbol(name)
        if kind == "const":
            return sp.pi if text == "\\pi" else sp.oo
        if kind == "op" and text in "([":
            self.i -= 1
            return self.paren()
        if kind == "op" and text == "|":
            self.in_abs += 1
            value = self.expr()
            self.take("|")
            self.in_abs -= 1
            return sp.Abs(value)
        if kind == "cmd":
            return self.command(text)
        if kind == "func":
            return self.function(text)
        raise Unreadable("unexpected %r" % (text or "end"))

    def command(self, name):
        sp = self.sp
        if name == "frac":
            num, den = self.group(), self.group()
            if den == 0:
                raise Unreadable("division by zero")
            return num / den
        if name == "binom":
            n, k = self.group(), self.group()
            if n.is_Number and abs(n) > MAX_FACTORIAL:
                raise TooLarge("binomial too large")
            return sp.binomial(n, k)
        if name == "sqrt":
            index = None
            if self.peek() == ("op", "["):
                self.take()
                index = self.expr()
                self.take("]")
            radicand = self.group()
            if index is None:
                return sp.sqrt(radicand)
            if index.is_Integer and index % 2 == 1:
                return sp.real_root(radicand, index)  # \sqrt[3]{-8} = -2, not a complex root
            return sp.root(radicand, index)
        if name in ("lfloor", "lceil"):
            value = self.expr()
            self.take("rfloor" if name == "lfloor" else "rceil")
            return sp.floor(value) if name == "lfloor" else sp.ceiling(value)
        raise Unreadable("unexpected \\%s" % name)

    def function(self, name):
        sp = self.sp
        power, base = None, None
        if name == "log" and self.peek() == ("op", "_"):
            self.take()
            base = self.group()
        if self.peek() == ("op", "^"):  # \sin^2 x
            self.take()
            power = self.group()
        if self.peek()[0] == "op" and self.peek()[1] == "(":
            arg = self.paren()
        else:  # \sin 2x: the argument is the following product of numbers and letters
            arg = self.postfix()
            while self.peek()[0] in ("num", "var", "const"):
                arg = arg * self.postfix()
        table = {"sin": sp.sin, "cos": sp.cos, "tan": sp.tan, "sec": sp.sec, "csc": sp.csc,
                 "cot": sp.cot, "arcsin": sp.asin, "arccos": sp.acos, "arctan": sp.atan,
                 "arcsec": sp.asec, "arccsc": sp.acsc, "arccot": sp.acot, "sinh": sp.sinh,
                 "cosh": sp.cosh, "tanh": sp.tanh, "ln": sp.log, "exp": sp.exp, "log": sp.log}
        if name == "det":
            raise Unreadable("det needs a matrix")
        value = sp.log(arg, base) if base is not None else table[name](arg)
        return self.safe_pow(value, power) if power is not None else value

# ----------------------------------------------------------------------------- answer structure

_PAIRS = [("\\{", ("\\}",)), ("\\langle", ("\\rangle",)), ("(", (")", "]")), ("[", ("]", ")"))]


def _split_top(s, seps):
    """Split s at separators that are outside every bracket."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(s):
        ch = s[i]
        if ch in "([{" or s.startswith("\\{", i) or s.startswith("\\langle", i):
            depth += 1
        elif ch in ")]}" or s.startswith("\\}", i) or s.startswith("\\rangle", i):
            depth -= 1
        if depth == 0:
            for sep in seps:
                if s.startswith(sep, i):
                    parts.append(s[start:i])
                    start = i + len(sep)
                    i = start - 1
                    break
        if s.startswith("\\{", i) or s.startswith("\\}", i):
            i += 1
        i += 1
        if depth > MAX_DEPTH:
            raise TooLarge("nested too deeply")
    parts.append(s[start:])
    return [p.strip() for p in parts]


def _outer_bracket(s):
    """(opener, closer, inner) when one bracket pair wraps all of s ('[1, 2)' too), else None."""
    for opener, closers in _PAIRS:
        if s.startswith(opener):
            for closer in closers:
                if s.endswith(closer) and len(s) >= len(opener) + len(closer):
                    inner = s[len(opener):len(s) - len(closer)]
                    if _balanced(inner):
                        return opener, closer, inner
            return None
    return None


def _balanced(s):
    depth = 0
    for m in re.finditer(r"\\[{}]|\\langle|\\rangle|[()\[\]{}]", s):
        depth += 1 if m.group() in ("(", "[", "{", "\\{", "\\langle") else -1
        if depth < 0:
            return False
    return depth == 0


def _read_answer(s, sp):
    """Structure of a cleaned answer: ('expr', e, decimal) | ('eq', l, r) | ('rel', op, l, r)
    | ('seq', opener, closer, [items]) | ('list', [items]) | ('union', [items])
    | ('matrix', [[items]]) | ('text', words)."""
    if len(s) > MAX_ANSWER_CHARS:
        raise TooLarge("answer too long")
    if not s:
        raise Unreadable("empty answer")
    m = re.fullmatch(r"\\begin\{([pbBvV]?matrix|array|smallmatrix)\}(?:(?<=\{array\})\{[^{}]*\})?(.*)"
                     r"\\end\{\1\}", s, re.S)
    if m:
        rows = [r for r in re.split(r"\\\\", m.group(2)) if r.strip()]
        return ("matrix", [[_read_answer(c.strip(), sp) for c in r.split("&")] for r in rows])
    if _is_words(s):
        return ("text", " ".join(s.lower().split()))
    parts = _split_top(s, ["\\cup"])
    if len(parts) > 1:
        return ("union", [_read_answer(p, sp) for p in parts])
    if s.count("\\pm") + s.count("\\mp") == 1:  # 1\pm\sqrt2 means two values
        a, b = ("+", "-") if "\\pm" in s else ("-", "+")
        body = s.replace("\\pm", "\\PM").replace("\\mp", "\\PM")
        plus, minus = body.replace("\\PM", a), body.replace("\\PM", b)
        return ("list", [_read_answer(plus, sp), _read_answer(minus, sp)])
    wrapped = _outer_bracket(s)
    if wrapped:
        opener, closer, inner = wrapped
        items = _split_top(inner, [",", ";"])
        if len(items) > 1 or opener == "\\{":
            return ("seq", opener, closer, [_read_answer(p, sp) for p in items if p or opener != "\\{"])
    items = _split_top(s, [",", ";"])
    if len(items) > 1:
        return ("list", [_read_answer(p, sp) for p in items if p])
    sides = _split_rel(s)
    if sides:
        ops, exprs = sides
        values = [_read_expr(e, sp)[0] for e in exprs]
        if ops == ["="] and len(values) == 2:
            return ("eq", values[0], values[1])
        if all(op == "=" for op in ops):  # x = y = 3: keep the outer sides
            return ("eq", values[0], values[-1])
        if len(ops) == 1:
            op, (l, r) = ops[0], values
            if op in (">", "\\ge"):
                op, l, r = ("<" if op == ">" else "\\le"), r, l
            return ("rel", op, l, r)
        raise Unreadable("chained inequality")
    value, decimal = _read_expr(s, sp)
    return ("expr", value, decimal)


def _is_words(s):
    """'yes', 'no solution', 'Monday': words, not a product of single-letter variables."""
    if not re.fullmatch(r"[A-Za-z][A-Za-z ]+", s):
        return False
    runs = [w for w in re.findall(r"[A-Za-z]+", s) if w not in _FUNCS and w not in _GREEK]
    return " " in s.strip() or any(len(w) >= 3 for w in runs)


def _split_rel(s):
    """([ops], [sides]) when s is a relation at top level, else None."""
    pieces, ops, depth, last = [], [], 0, 0
    for m in re.finditer(r"\\le|\\ge|\\ne|<=|>=|<|>|=|[()\[\]{}]", s):
        tok = m.group()
        if tok in "([{":
            depth += 1
        elif tok in ")]}":
            depth -= 1
        elif depth == 0:
            pieces.append(s[last:m.start()])
            ops.append({"<=": "\\le", ">=": "\\ge"}.get(tok, tok))
            last = m.end()
    if not ops:
        return None
    pieces.append(s[last:])
    if any(not p.strip() for p in pieces):
        raise Unreadable("relation with an empty side")
    return ops, pieces


def _read_expr(s, sp):
    reader = _Reader(s, sp)
    return reader.read(), reader.has_decimal

# ----------------------------------------------------------------------------- comparing


def _sample_values(sp):
    # irregular positive numbers: two different expressions rarely agree at all of them;
    # 30-digit floats, so x^(10^6) at a point costs nothing (an exact rational would not)
    return [sp.Float(sp.Rational(n, 997), 30) for n in (733, 1289, 2143, 431, 1871, 3109, 953, 2609)]


def _value(e, sp):
    """e evaluated to 30 digits, or None when it is not a finite number."""
    v = e.evalf(30)
    if not v.is_number or v.has(sp.nan, sp.zoo, sp.oo, -sp.oo):
        return None
    return v


def _close(u, v, sp, rel):
    """|u - v| <= rel * max(|u|, |v|) for sympy numbers of any magnitude (complex allowed)."""
    diff = sp.Abs(u - v).evalf(30)
    mag = sp.Max(sp.Abs(u), sp.Abs(v)).evalf(30)
    if mag == 0:
        return True
    return bool(diff <= mag * rel)


def _as_fraction(v, sp):
    r = sp.Rational(v)
    return Fraction(int(r.p), int(r.q))


def _compare_expr(a, b, sp, a_dec=False, b_dec=False):
    """(equal, reason) for two sympy expressions."""
    if a == b:
        return True, "equal"
    if a.has(sp.oo, -sp.oo, sp.zoo) or b.has(sp.oo, -sp.oo, sp.zoo):
        return False, "wrong value"
    if a.is_Rational and b.is_Rational:
        pa = (Fraction(int(a.p), int(a.q)), a_dec)
        pb = (Fraction(int(b.p), int(b.q)), b_dec)
        return _compare_fractions(pa, pb)
    symbols = sorted(a.free_symbols | b.free_symbols, key=str)
    if not symbols:
        va, vb = _value(a, sp), _value(b, sp)
        if va is None or vb is None:
            return False, "wrong value"
        if _close(va, vb, sp, sp.Float("1e-25")):
            return True, "equal"  # equal to 25 digits: the same closed form, written differently
        if (a_dec or b_dec) and va.is_real and vb.is_real:
            if _sig6_close(_as_fraction(va, sp), _as_fraction(vb, sp)):
                return True, "equal"
            if a_dec and not b_dec and _close(va, vb, sp, sp.Float("0.01")):
                return False, "approximation"
        return False, "wrong value"
    if len(symbols) > 10:
        raise TooLarge("too many variables")
    values, agree = _sample_values(sp), 0
    for k in range(4):  # identity testing at random points, instead of an unbounded simplify
        point = {s: values[(3 * k + 5 * j) % len(values)] for j, s in enumerate(symbols)}
        va, vb = _value(a.xreplace(point), sp), _value(b.xreplace(point), sp)
        if va is None or vb is None:
            continue
        if not _close(va, vb, sp, sp.Float("1e-15")):
            return False, "wrong value"
        agree += 1
    if agree >= 2:
        return True, "equal"
    return (True, "equal") if sp.simplify(a - b) == 0 else (False, "wrong value")


def _compare_eq(a, b, sp, positive=False):
    """Two equations are equal when lhs-rhs of one is a constant multiple of the other's
    (a positive multiple for inequalities, whose direction a negative one would flip)."""
    da, db = a[1] - a[2], b[1] - b[2]
    if a[1] == b[1] and a[1].is_Symbol and not positive:
        return _compare_expr(a[2], b[2], sp)
    symbols = sorted(da.free_symbols | db.free_symbols, key=str)
    if not symbols:
        return (bool(da == 0) == bool(db == 0)), "wrong value"
    values, ratios = _sample_values(sp), []
    for k in range(4):
        point = {s: values[(3 * k + 5 * j) % len(values)] for j, s in enumerate(symbols)}
        va, vb = _value(da.xreplace(point), sp), _value(db.xreplace(point), sp)
        if va is None or vb is None or vb == 0:
            continue
        ratios.append(va / vb)
    if len(ratios) >= 2 and all(r != 0 and _close(r, ratios[0], sp, sp.Float("1e-15")) for r in ratios):
        if not positive or (ratios[0].is_real and ratios[0] > 0):
            return True, "equal"
    return False, "wrong value"


def _compare_items(items_a, items_b, sp, ordered):
    """(equal, reason) for two lists of answers, in order or as multisets."""
    if len(items_a) != len(items_b):
        return False, "count"
    if ordered:
        for x, y in zip(items_a, items_b):
            ok, why = _compare(x, y, sp)
            if not ok:
                if _compare_items(items_a, items_b, sp, ordered=False)[0]:
                    return False, "order"
                return False, why
        return True, "equal"
    left = list(items_b)
    for x in items_a:  # greedy matching is enough: equality here is transitive
        for k, y in enumerate(left):
            if _compare(x, y, sp)[0]:
                del left[k]
                break
        else:
            return False, "wrong value"
    return True, "equal"


def _compare(p, g, sp):
    """(equal, reason) for two read answers, pred first."""
    kp, kg = p[0], g[0]
    if kp == "eq" and kg != "eq" and kg != "rel":  # x = 3 against 3
        if p[1].is_Symbol and p[1] not in p[2].free_symbols:
            return _compare(("expr", p[2], False), g, sp)
        return False, "form"
    if kg == "eq" and kp != "eq" and kp != "rel":
        if g[1].is_Symbol and g[1] not in g[2].free_symbols:
            return _compare(p, ("expr", g[2], False), sp)
        return False, "form"
    if kp == "seq" and kg == "list":  # (1, 2) against the unordered '1, 2'
        return _compare_items(p[3], g[1], sp, ordered=False)
    if kp == "list" and kg == "seq":
        if g[1] == "\\{":
            return _compare_items(p[1], g[3], sp, ordered=False)
        return _compare_items(p[1], g[3], sp, ordered=True)
    if kp != kg:
        if "text" in (kp, kg):
            return False, "wrong value"
        many = ("list", "seq", "union", "matrix")
        return False, ("count" if (kp in many) != (kg in many) else "form")
    if kp == "text":
        return (p[1] == g[1]), "wrong value"
    if kp == "expr":
        return _compare_expr(p[1], g[1], sp, p[2], g[2])
    if kp == "eq":
        return _compare_eq(p, g, sp)
    if kp == "rel":
        if p[1] != g[1]:
            return False, "wrong value"
        return _compare_eq(("eq", p[2], p[3]), ("eq", g[2], g[3]), sp, positive=True)
    if kp in ("list", "union"):
        return _compare_items(p[1], g[1], sp, ordered=False)
    if kp == "matrix":
        if [len(r) for r in p[1]] != [len(r) for r in g[1]]:
            return False, "form"
        return _compare_items([c for r in p[1] for c in r], [c for r in g[1] for c in r], sp, True)
    # sequences: sets are unordered; tuples, vectors and intervals are ordered
    (_, po, pc, pi), (_, go, gc, gi) = p, g
    if po == "\\{" or go == "\\{":
        if po != go:
            return False, "form"
        return _compare_items(pi, gi, sp, ordered=False)
    ok, why = _compare_items(pi, gi, sp, ordered=True)
    if not ok or (po, pc) == (go, gc):
        return ok, why
    if len(pi) == 2 and po in ("(", "[") and go in ("(", "["):
        return False, "ends"  # same end points, one end open in one and closed in the other
    return False, "form"


def _compare_strings(pred, gold):
    """The symbolic comparison on cleaned strings; runs in the worker (or in-process as a fallback)."""
    import sympy
    try:
        g = _read_answer(gold, sympy)
    except TooLarge:
        return False, "gold too large"
    except (Unreadable, ValueError, TypeError, ArithmeticError, RecursionError):
        g = ("text", " ".join(gold.lower().split()))
    try:
        p = _read_answer(pred, sympy)
    except TooLarge:
        return False, "too large"
    except (Unreadable, ValueError, TypeError, ArithmeticError, RecursionError):
        same = " ".join(pred.lower().split()) == " ".join(gold.lower().split())
        return (True, "equal") if same else (False, "unreadable")
    try:
        return _compare(p, g, sympy)
    except TooLarge:
        return False, "too large"
    except (ValueError, TypeError, ArithmeticError, RecursionError, AttributeError):
        return False, "unreadable"

# ----------------------------------------------------------------------------- the worker process


def _worker_main():
    """Loop of the worker: one JSON request per line in, one JSON reply per line out."""
    try:  # a runaway expression should die, not eat the machine (Linux/macOS only)
        import resource
        limit = 4 * 1024 ** 3
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass
    import sympy  # noqa: F401  (import before 'ready' so no call pays for it)
    sys.setrecursionlimit(4000)
    print("ready", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        try:
            equal, why = _compare_strings(request["p"], request["g"])
        except Exception:  # noqa: BLE001 - keep serving: one bad answer must not kill the worker
            equal, why = False, "unreadable"
        print(json.dumps({"id": request["id"], "equal": equal, "why": why}), flush=True)


class _Worker:
    """One reusable worker process, shared by all threads, restarted after a timeout."""

    def __init__(self):
        self.lock = threading.Lock()
        self.proc = None
        self.replies = None
        self.next_id = 0
        self.owner = os.getpid()
        self.fallback = False

    def start(self):
        path = os.path.abspath(__file__)
        # fork+exec (not multiprocessing): the child imports only this file, never __main__
        self.proc = subprocess.Popen(
            [sys.executable, "-u", path, WORKER_FLAG], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, encoding="utf-8",
            cwd=os.path.dirname(path))
        self.replies = queue.Queue()
        threading.Thread(target=_pump, args=(self.proc.stdout, self.replies), daemon=True).start()
        try:
            ready = self.replies.get(timeout=START_TIMEOUT)
        except queue.Empty:
            ready = None
        if ready != "ready":
            self.stop()
            raise RuntimeError("verify.py worker did not start (is sympy installed for %s?)"
                               % sys.executable)

    def stop(self):
        proc, self.proc = self.proc, None
        if proc is None or os.getpid() != self.owner:
            return
        try:
            proc.kill()
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        for f in (proc.stdin, proc.stdout):
            try:
                f.close()
            except OSError:
                pass

    def ask(self, pred, gold, timeout):
        """(equal, reason), or None when no reply came within timeout."""
        if os.getpid() != self.owner:  # we are a forked child: do not share the parent's pipes
            self.__init__()
        waiting = timeout + (START_TIMEOUT if self.proc is None else 0.0)
        if not self.lock.acquire(timeout=waiting):
            return None
        try:
            if self.fallback:
                return _compare_strings(pred, gold)
            if self.proc is None or self.proc.poll() is not None:
                try:
                    self.start()
                except (OSError, RuntimeError) as err:
                    warnings.warn("verify.py: %s; comparing in-process without a deadline" % err)
                    self.fallback = True
                    return _compare_strings(pred, gold)
            self.next_id += 1
            request = json.dumps({"id": self.next_id, "p": pred, "g": gold})
            deadline = time.monotonic() + timeout
            try:
                self.proc.stdin.write(request + "\n")
                self.proc.stdin.flush()
                while True:
                    reply = self.replies.get(timeout=max(0.0, deadline - time.monotonic()))
                    if reply is None:
                        raise queue.Empty  # the worker died (memory limit, crash)
                    reply = json.loads(reply)
                    if reply.get("id") == self.next_id:
                        return reply["equal"], reply["why"]
            except (queue.Empty, OSError, ValueError):
                self.stop()  # killed mid-work; the next call starts a fresh worker
                return None
        finally:
            self.lock.release()


def _pump(stream, replies):
    """Move the worker's output lines into a queue, so the parent can wait with a deadline."""
    try:
        for line in stream:
            replies.put(line.strip())
    except (OSError, ValueError):
        pass
    replies.put(None)


_WORKER = _Worker()


def shutdown_worker():
    """Stop the worker process now (it restarts on the next symbolic call). Runs at exit."""
    with _WORKER.lock:
        _WORKER.stop()


atexit.register(shutdown_worker)

# ----------------------------------------------------------------------------- the public checks

_CHOICE_RE = re.compile(r"\(?([A-J])\)?|\(([a-j])\)")
_PRED_CHOICE_RE = re.compile(r"\(?([A-Ja-j])\)?(?:[\s.:)].*)?|\(([A-Ja-j])\).*", re.S)


def _judge(pred, gold, timeout):
    """(equal, reason) for two bare answers; reason is a short code used by score()."""
    if not isinstance(pred, str) or not pred.strip():
        return False, "no answer"
    if not isinstance(gold, str):
        raise TypeError("gold answer must be a str, got %s" % type(gold).__name__)
    if len(pred) > MAX_ANSWER_CHARS * 10:
        return False, "too long"
    p0, g0 = pred.strip(), gold.strip()
    if _PLAIN_RE.fullmatch(p0) and _PLAIN_RE.fullmatch(g0) and len(p0) + len(g0) < 200:
        return _compare_fractions((Fraction(p0), "." in p0), (Fraction(g0), "." in g0))
    p, g = _clean(pred), _clean(gold)
    if not p:
        return False, "no answer"  # only decoration, e.g. '$$' or '\\text{}'
    if len(p) > MAX_ANSWER_CHARS:
        return False, "too long"
    if p == g or (len(g) > 1 and g.isalpha() and p.lower() == g.lower()):  # Yes = yes
        return True, "equal"
    choice = _CHOICE_RE.fullmatch(g)
    if choice:  # multiple choice: compare letters, whatever decoration surrounds them
        letter = (choice.group(1) or choice.group(2)).upper()
        mine = _PRED_CHOICE_RE.fullmatch(p)
        if not mine:
            return False, "not a choice"
        same = (mine.group(1) or mine.group(2)).upper() == letter
        return same, ("equal" if same else "wrong choice")
    pv, gv = _VAR_PREFIX_RE.match(p), _VAR_PREFIX_RE.match(g)
    if not (pv and gv and pv.group(1) != gv.group(1)):
        pn, gn = _plain_number(p[pv.end():] if pv else p), _plain_number(g[gv.end():] if gv else g)
        if pn is not None and gn is not None:
            verdict = _compare_fractions(pn, gn)
            if not verdict[0] and ("%" in pred) != ("%" in gold):  # 50% against 0.5
                scale = Fraction(1, 100) if "%" in pred else Fraction(100)
                if pn[0] * scale == gn[0]:
                    return True, "equal"
            return verdict
    if len(g) > MAX_ANSWER_CHARS:
        return False, "gold too large"
    reply = _WORKER.ask(p, g, timeout)
    return reply if reply is not None else (False, "timeout")


def is_equiv(pred, gold, timeout=2.0):
    """True when the bare answer pred equals the bare gold answer (gold second)."""
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError("timeout must be a positive number of seconds, got %r" % (timeout,))
    return _judge(pred, gold, timeout)[0]


def _show(s, limit=80):
    s = " ".join(str(s).split())
    return s if len(s) <= limit else s[:limit - 3] + "..."


_FEEDBACK = {
    "wrong value": "answer {p} differs from the expected value {g} (wrong value)",
    "approximation": "answer {p} is an approximation; give the exact form {g}",
    "order": "answer {p} has the right entries in the wrong order; expected {g}",
    "ends": "answer {p} has the wrong interval ends (open vs closed); expected {g}",
    "count": "answer {p} has a different number of values than the expected {g}",
    "form": "answer {p} has a different form (kind of object) than the expected {g}",
    "wrong choice": "answer {p} is the wrong choice; expected {g}",
    "not a choice": "answer {p} is not a choice letter; expected the letter {g}",
    "unreadable": "answer {p} could not be read as math; write it in plain LaTeX, expected {g}",
    "too large": "answer {p} is too large to check (huge power, factorial or nesting); "
                 "simplify it, expected {g}",
    "too long": "answer is {n} characters long; give one short final answer in \\boxed{{}}",
    "timeout": "answer {p} could not be checked against {g} in time; give a simpler closed form",
    "gold too large": "the expected answer {g} could not be read; this problem cannot be scored",
    "no answer": "no final answer found: end with \\boxed{{ANSWER}}",
}


def score(completion, gold, timeout=2.0):
    """(reward, feedback): 1.0 and 'correct', or 0.0 and one line saying what went wrong.

    completion is a full model output; gold is the bare gold answer (a \\boxed{} or a
    GSM8K '#### x' in it is extracted first)."""
    if not isinstance(gold, str):
        raise TypeError("gold answer must be a str, got %s" % type(gold).__name__)
    if not isinstance(completion, str):
        return 0.0, "no completion text"
    if len(completion) > MAX_COMPLETION_CHARS:
        return 0.0, ("completion is %d characters, over the %d limit; reason briefly and end "
                     "with \\boxed{ANSWER}" % (len(completion), MAX_COMPLETION_CHARS))
    if "\\boxed" in gold or "\\fbox" in gold or "####" in gold:
        gold = extract_answer(gold) or gold
    pred = extract_answer(completion)
    if pred is None:
        return 0.0, "no final answer found: end with \\boxed{ANSWER}"
    equal, why = _judge(pred, gold, timeout)
    if equal:
        return 1.0, "correct"
    shown_p = _show(normalize(pred)) if len(pred) <= MAX_ANSWER_CHARS else "(too long)"
    shown_g = _show(normalize(gold)) if len(gold) <= MAX_ANSWER_CHARS else "(too long)"
    message = _FEEDBACK.get(why, _FEEDBACK["wrong value"])
    return 0.0, message.format(p=shown_p, g=shown_g, n=len(pred))


def main(argv):
    if len(argv) == 2 and argv[1] == WORKER_FLAG:
        _worker_main()
        return 0
    if len(argv) != 3:
        print("usage: python verify.py PRED GOLD   (PRED may be a whole completion; exit 0: equal, 1: not)",
              file=sys.stderr)
        return 2
    completion, gold = argv[1], argv[2]
    try:
        with warnings.catch_warnings():  # the ImportError below says it in one line
            warnings.simplefilter("ignore")
            reward, feedback = score(completion, gold)
    except ImportError:
        print("verify.py: error: comparing these answers needs sympy: pip install sympy", file=sys.stderr)
        return 2
    pred = extract_answer(completion)
    print("verdict:    %s (reward %.1f)" % ("equal" if reward else "different", reward))
    print("extracted:  %s" % pred)
    print("normalized: %s  vs gold  %s" % (normalize(pred) if pred else None, normalize(gold)))
    print("feedback:   %s" % feedback)
    return 0 if reward else 1  # usable in shell scripts: exit 0 when equal


if __name__ == "__main__":
    sys.exit(main(sys.argv))
