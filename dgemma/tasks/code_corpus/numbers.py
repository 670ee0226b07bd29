"""Families of small integer functions: primes, digits, divisors, sequences and simple comparisons."""
from .family import Family

FAMILIES = [
    Family("fibonacci", names=("fibonacci", "fib", "nth_fibonacci", "fibo"),
        params=(("n",), ("k",), ("num",)), hints=("int", "int"), topic="numbers",
        docs=("Return the ARG0-th Fibonacci number.", "Compute the Fibonacci number at index ARG0.",
              "Return fib(ARG0), with fib(0) = 0 and fib(1) = 1."),
        tests=(((0,), 0), ((1,), 1), ((2,), 1), ((7,), 13), ((10,), 55)),
        bodies=("""
a, b = 0, 1
for _ in range(ARG0):
    a, b = b, a + b
return a
""", """
if ARG0 < 2:
    return ARG0
return FN(ARG0 - 1) + FN(ARG0 - 2)
""")),
    Family("factorial", names=("factorial", "fact", "compute_factorial", "factorial_of"),
        params=(("n",), ("num",), ("k",)), hints=("int", "int"), topic="numbers",
        docs=("Return ARG0! (the product 1 * 2 * ... * ARG0).", "Compute the factorial of ARG0.",
              "Return the factorial of a non-negative integer ARG0, with 0! = 1."),
        tests=(((0,), 1), ((1,), 1), ((5,), 120), ((7,), 5040), ((10,), 3628800)),
        bodies=("""
result = 1
for i in range(2, ARG0 + 1):
    result *= i
return result
""", """
if ARG0 <= 1:
    return 1
return ARG0 * FN(ARG0 - 1)
""", """
import math
return math.factorial(ARG0)
""", """
import math
return math.prod(range(1, ARG0 + 1))
""")),
    Family("gcd", names=("gcd", "greatest_common_divisor", "compute_gcd", "euclid_gcd"),
        params=(("a", "b"), ("x", "y"), ("m", "n")), hints=("int", "int", "int"), topic="numbers",
        docs=("Return the greatest common divisor of ARG0 and ARG1.", "Compute gcd(ARG0, ARG1) with Euclid's algorithm.",
              "Return the largest integer that divides both ARG0 and ARG1."),
        tests=(((12, 18), 6), ((0, 5), 5), ((7, 0), 7), ((17, 5), 1), ((100, 75), 25)),
        bodies=("""
while ARG1:
    ARG0, ARG1 = ARG1, ARG0 % ARG1
return ARG0
""", """
if ARG1 == 0:
    return ARG0
return FN(ARG1, ARG0 % ARG1)
""", """
import math
return math.gcd(ARG0, ARG1)
""")),
    Family("lcm", names=("lcm", "least_common_multiple", "compute_lcm", "lowest_common_multiple"),
        params=(("a", "b"), ("x", "y")), hints=("int", "int", "int"), topic="numbers",
        docs=("Return the least common multiple of ARG0 and ARG1.", "Compute lcm(ARG0, ARG1); it is 0 if either is 0.",
              "Return the smallest positive number divisible by both ARG0 and ARG1."),
        tests=(((4, 6), 12), ((3, 5), 15), ((7, 7), 7), ((0, 5), 0), ((1, 9), 9), ((21, 6), 42)),
        bodies=("""
import math
if ARG0 == 0 or ARG1 == 0:
    return 0
return ARG0 * ARG1 // math.gcd(ARG0, ARG1)
""", """
if ARG0 == 0 or ARG1 == 0:
    return 0
multiple = max(ARG0, ARG1)
while multiple % ARG0 != 0 or multiple % ARG1 != 0:
    multiple += max(ARG0, ARG1)
return multiple
""", """
import math
return math.lcm(ARG0, ARG1)
""")),
    Family("is_prime", names=("is_prime", "check_prime", "prime_check", "is_prime_number"),
        params=(("n",), ("num",), ("x",)), hints=("int", "bool"), topic="numbers",
        docs=("Return True if ARG0 is a prime number.", "Check whether ARG0 is prime.",
              "Return whether ARG0 has exactly two divisors, 1 and itself."),
        tests=(((0,), False), ((1,), False), ((2,), True), ((9,), False), ((17,), True), ((97,), True), ((-7,), False)),
        bodies=("""
if ARG0 < 2:
    return False
for d in range(2, int(ARG0 ** 0.5) + 1):
    if ARG0 % d == 0:
        return False
return True
""", """
import math
return ARG0 > 1 and all(ARG0 % d for d in range(2, math.isqrt(ARG0) + 1))
""", """
if ARG0 < 2:
    return False
d = 2
while d * d <= ARG0:
    if ARG0 % d == 0:
        return False
    d += 1
return True
""")),
    Family("primes_up_to", names=("primes_up_to", "list_primes", "sieve_of_eratosthenes", "primes_below_or_equal"),
        params=(("n",), ("limit",), ("upper",)), hints=("int", "list[int]"), topic="numbers",
        docs=("Return a list of all primes less than or equal to ARG0.", "List the prime numbers from 2 up to ARG0.",
              "Return the primes in increasing order that do not exceed ARG0."),
        tests=(((0,), []), ((1,), []), ((2,), [2]), ((10,), [2, 3, 5, 7]), ((30,), [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]),
               ((-5,), [])),
        bodies=("""return [p for p in range(2, ARG0 + 1) if all(p % d for d in range(2, int(p ** 0.5) + 1))]""", """
if ARG0 < 2:
    return []
sieve = [True] * (ARG0 + 1)
sieve[0] = sieve[1] = False
for i in range(2, int(ARG0 ** 0.5) + 1):
    if sieve[i]:
        for j in range(i * i, ARG0 + 1, i):
            sieve[j] = False
return [i for i, flag in enumerate(sieve) if flag]
""", """
primes = []
for candidate in range(2, ARG0 + 1):
    if all(candidate % p for p in primes if p * p <= candidate):
        primes.append(candidate)
return primes
""")),
    Family("sum_of_digits", names=("sum_of_digits", "sum_digits", "digit_sum", "add_digits"),
        params=(("n",), ("num",), ("number",)), hints=("int", "int"), topic="numbers",
        docs=("Return the sum of the decimal digits of ARG0.", "Add up the digits of ARG0 (its sign is ignored).",
              "Compute the digit sum of the integer ARG0."),
        tests=(((0,), 0), ((7,), 7), ((123,), 6), ((9999,), 36), ((-45,), 9), ((1001,), 2)),
        bodies=("""return sum(int(c) for c in str(abs(ARG0)))""", """
ARG0 = abs(ARG0)
total = 0
while ARG0:
    total += ARG0 % 10
    ARG0 //= 10
return total
""", """
if ARG0 < 0:
    return FN(-ARG0)
if ARG0 < 10:
    return ARG0
return ARG0 % 10 + FN(ARG0 // 10)
""")),
    Family("power", names=("power", "int_power", "raise_to_power", "integer_pow"),
        params=(("base", "exponent"), ("x", "n"), ("b", "e")), hints=("int", "int", "int"), topic="numbers",
        docs=("Return ARG0 raised to the non-negative integer power ARG1.", "Compute ARG0 ** ARG1 for ARG1 >= 0.",
              "Multiply ARG0 by itself ARG1 times; the result for ARG1 = 0 is 1."),
        tests=(((2, 10), 1024), ((5, 0), 1), ((0, 0), 1), ((-3, 3), -27), ((7, 1), 7), ((3, 5), 243)),
        bodies=("""
result = 1
for _ in range(ARG1):
    result *= ARG0
return result
""", """
if ARG1 == 0:
    return 1
return ARG0 * FN(ARG0, ARG1 - 1)
""", """
result = 1
while ARG1 > 0:
    if ARG1 % 2 == 1:
        result *= ARG0
    ARG0 *= ARG0
    ARG1 //= 2
return result
""", """return ARG0 ** ARG1""")),
    Family("is_even", names=("is_even", "check_even", "even", "is_even_number"),
        params=(("n",), ("num",), ("x",)), hints=("int", "bool"), topic="numbers",
        docs=("Return True if ARG0 is even.", "Check whether ARG0 is divisible by 2."),
        tests=(((0,), True), ((1,), False), ((-4,), True), ((7,), False), ((10,), True)),
        bodies=("""return ARG0 % 2 == 0""", """return (ARG0 & 1) == 0""", """
if ARG0 % 2:
    return False
return True
""")),
    Family("is_odd", names=("is_odd", "check_odd", "odd", "is_odd_number"),
        params=(("n",), ("num",), ("x",)), hints=("int", "bool"), topic="numbers",
        docs=("Return True if ARG0 is odd.", "Check whether ARG0 leaves remainder 1 when divided by 2."),
        tests=(((0,), False), ((3,), True), ((-5,), True), ((8,), False), ((1,), True)),
        bodies=("""return ARG0 % 2 == 1""", """return ARG0 % 2 != 0""", """return bool(ARG0 & 1)""")),
    Family("absolute_value", names=("absolute_value", "absolute", "my_abs", "abs_value"),
        params=(("n",), ("x",), ("num",)), hints=("int", "int"), topic="numbers",
        docs=("Return the absolute value of ARG0.", "Return ARG0 without its sign.", "Return the distance of ARG0 from zero."),
        tests=(((0,), 0), ((5,), 5), ((-5,), 5), ((-120,), 120), ((1,), 1)),
        bodies=("""
if ARG0 < 0:
    return -ARG0
return ARG0
""", """return -ARG0 if ARG0 < 0 else ARG0""", """return abs(ARG0)""")),
    Family("max_of_two", names=("max_of_two", "pick_larger", "maximum_of_two", "bigger_of_two"),
        params=(("a", "b"), ("x", "y"), ("first", "second")), hints=("int", "int", "int"), topic="numbers",
        docs=("Return the larger of ARG0 and ARG1.", "Return the maximum of two numbers ARG0 and ARG1."),
        tests=(((1, 2), 2), ((5, 3), 5), ((-1, -7), -1), ((4, 4), 4), ((0, -3), 0)),
        bodies=("""
if ARG0 >= ARG1:
    return ARG0
return ARG1
""", """return ARG0 if ARG0 > ARG1 else ARG1""", """return max(ARG0, ARG1)""")),
    Family("max_of_three", names=("max_of_three", "largest_of_three", "maximum_of_three", "biggest_of_three"),
        params=(("a", "b", "c"), ("x", "y", "z")), hints=("int", "int", "int", "int"), topic="numbers",
        docs=("Return the largest of ARG0, ARG1 and ARG2.", "Return the maximum of three numbers."),
        tests=(((1, 2, 3), 3), ((3, 2, 1), 3), ((2, 9, 4), 9), ((-5, -2, -9), -2), ((7, 7, 7), 7)),
        bodies=("""return max(ARG0, ARG1, ARG2)""", """
largest = ARG0
if ARG1 > largest:
    largest = ARG1
if ARG2 > largest:
    largest = ARG2
return largest
""", """return sorted([ARG0, ARG1, ARG2])[-1]""")),
    Family("min_of_two", names=("min_of_two", "pick_smaller", "minimum_of_two", "smaller_of_two"),
        params=(("a", "b"), ("x", "y"), ("first", "second")), hints=("int", "int", "int"), topic="numbers",
        docs=("Return the smaller of ARG0 and ARG1.", "Return the minimum of two numbers ARG0 and ARG1."),
        tests=(((1, 2), 1), ((5, 3), 3), ((-1, -7), -7), ((4, 4), 4), ((0, -3), -3)),
        bodies=("""
if ARG0 <= ARG1:
    return ARG0
return ARG1
""", """return ARG0 if ARG0 < ARG1 else ARG1""", """return min(ARG0, ARG1)""")),
    Family("sign", names=("sign", "signum", "sign_of", "get_sign"),
        params=(("n",), ("x",), ("num",)), hints=("int", "int"), topic="numbers",
        docs=("Return -1, 0 or 1 according to the sign of ARG0.", "Return the signum of ARG0."),
        tests=(((0,), 0), ((5,), 1), ((-3,), -1), ((1,), 1), ((-100,), -1)),
        bodies=("""
if ARG0 > 0:
    return 1
if ARG0 < 0:
    return -1
return 0
""", """return (ARG0 > 0) - (ARG0 < 0)""", """return 0 if ARG0 == 0 else ARG0 // abs(ARG0)""")),
    Family("clamp", names=("clamp", "clamp_value", "limit_to_range", "bound_value"),
        params=(("value", "low", "high"), ("x", "lo", "hi"), ("n", "minimum", "maximum")), topic="numbers",
        hints=("int", "int", "int", "int"),
        docs=("Return ARG0 limited to the range ARG1..ARG2.", "Clamp ARG0 so that ARG1 <= result <= ARG2.",
              "Return ARG1 if ARG0 is below it, ARG2 if ARG0 is above it, else ARG0."),
        tests=(((5, 0, 10), 5), ((-3, 0, 10), 0), ((15, 0, 10), 10), ((0, 0, 10), 0), ((10, 0, 10), 10), ((7, 7, 7), 7)),
        bodies=("""return max(ARG1, min(ARG0, ARG2))""", """
if ARG0 < ARG1:
    return ARG1
if ARG0 > ARG2:
    return ARG2
return ARG0
""", """return sorted((ARG1, ARG0, ARG2))[1]""")),
    Family("count_digits", names=("count_digits", "num_digits", "digit_count", "number_of_digits"),
        params=(("n",), ("num",), ("number",)), hints=("int", "int"), topic="numbers",
        docs=("Return how many decimal digits ARG0 has.", "Count the digits of ARG0, ignoring its sign; 0 has one digit."),
        tests=(((0,), 1), ((7,), 1), ((12345,), 5), ((-987,), 3), ((1000,), 4)),
        bodies=("""return len(str(abs(ARG0)))""", """
ARG0 = abs(ARG0)
count = 1
while ARG0 >= 10:
    ARG0 //= 10
    count += 1
return count
""", """
if -10 < ARG0 < 10:
    return 1
return 1 + FN(abs(ARG0) // 10)
""")),
    Family("reverse_digits", names=("reverse_digits", "reverse_integer", "reverse_number", "reversed_int"),
        params=(("n",), ("num",), ("x",)), hints=("int", "int"), topic="numbers",
        docs=("Return ARG0 with its decimal digits reversed, keeping its sign.", "Reverse the digits of the integer ARG0."),
        tests=(((123,), 321), ((0,), 0), ((1200,), 21), ((-45,), -54), ((7,), 7)),
        bodies=("""
sign = -1 if ARG0 < 0 else 1
return sign * int(str(abs(ARG0))[::-1])
""", """
rest, result = abs(ARG0), 0
while rest:
    result = result * 10 + rest % 10
    rest //= 10
return result if ARG0 >= 0 else -result
""")),
    Family("is_palindrome_number", names=("is_palindrome_number", "is_numeric_palindrome", "palindrome_number"),
        params=(("n",), ("num",), ("x",)), hints=("int", "bool"), topic="numbers",
        docs=("Return True if ARG0 reads the same forwards and backwards.",
              "Check whether the integer ARG0 is a palindrome; negative numbers are not."),
        tests=(((121,), True), ((123,), False), ((0,), True), ((-121,), False), ((1221,), True), ((10,), False)),
        bodies=("""return str(ARG0) == str(ARG0)[::-1]""", """
if ARG0 < 0:
    return False
original, reversed_num = ARG0, 0
while ARG0:
    reversed_num = reversed_num * 10 + ARG0 % 10
    ARG0 //= 10
return original == reversed_num
""", """
digits = str(ARG0)
return all(digits[i] == digits[-1 - i] for i in range(len(digits) // 2))
""")),
    Family("is_perfect_square", names=("is_perfect_square", "is_square", "check_perfect_square", "is_square_number"),
        params=(("n",), ("num",), ("x",)), hints=("int", "bool"), topic="numbers",
        docs=("Return True if ARG0 is the square of an integer.", "Check whether ARG0 is a perfect square."),
        tests=(((0,), True), ((1,), True), ((16,), True), ((15,), False), ((-4,), False), ((144,), True)),
        bodies=("""
import math
return ARG0 >= 0 and math.isqrt(ARG0) ** 2 == ARG0
""", """
if ARG0 < 0:
    return False
root = 0
while root * root < ARG0:
    root += 1
return root * root == ARG0
""", """return ARG0 >= 0 and int(ARG0 ** 0.5) ** 2 == ARG0""")),
    Family("is_perfect_number", names=("is_perfect_number", "is_perfect", "check_perfect_number", "perfect_number"),
        params=(("n",), ("num",), ("x",)), hints=("int", "bool"), topic="numbers",
        docs=("Return True if ARG0 equals the sum of its proper divisors.", "Check whether ARG0 is a perfect number."),
        tests=(((6,), True), ((28,), True), ((12,), False), ((1,), False), ((0,), False), ((496,), True)),
        bodies=("""return ARG0 > 1 and sum(d for d in range(1, ARG0) if ARG0 % d == 0) == ARG0""", """
if ARG0 < 2:
    return False
total = 1
d = 2
while d * d <= ARG0:
    if ARG0 % d == 0:
        total += d if d * d == ARG0 else d + ARG0 // d
    d += 1
return total == ARG0
""")),
    Family("sum_to_n", names=("sum_to_n", "sum_up_to", "sum_first_n", "sum_one_to_n"),
        params=(("n",), ("num",), ("limit",)), hints=("int", "int"), topic="numbers",
        docs=("Return 1 + 2 + ... + ARG0.", "Compute the sum of the integers from 1 to ARG0.",
              "Add up all whole numbers from 1 through ARG0."),
        tests=(((0,), 0), ((1,), 1), ((5,), 15), ((10,), 55), ((100,), 5050)),
        bodies=("""return ARG0 * (ARG0 + 1) // 2""", """return sum(range(1, ARG0 + 1))""", """
total = 0
for i in range(1, ARG0 + 1):
    total += i
return total
""", """
if ARG0 <= 0:
    return 0
return ARG0 + FN(ARG0 - 1)
""")),
    Family("sum_of_squares", names=("sum_of_squares", "sum_squares", "square_sum_to_n", "sum_squares_up_to"),
        params=(("n",), ("num",), ("limit",)), hints=("int", "int"), topic="numbers",
        docs=("Return 1**2 + 2**2 + ... + ARG0**2.", "Compute the sum of the squares of 1 through ARG0."),
        tests=(((0,), 0), ((1,), 1), ((2,), 5), ((3,), 14), ((10,), 385)),
        bodies=("""return ARG0 * (ARG0 + 1) * (2 * ARG0 + 1) // 6""",
                """return sum(i * i for i in range(1, ARG0 + 1))""", """
total = 0
for i in range(1, ARG0 + 1):
    total += i ** 2
return total
""")),
    Family("collatz_steps", names=("collatz_steps", "collatz_length", "count_collatz_steps", "steps_to_one"),
        params=(("n",), ("num",), ("start",)), hints=("int", "int"), topic="numbers",
        docs=("Return how many Collatz steps it takes for ARG0 to reach 1.",
              "Count the steps n -> n / 2 (even) or 3n + 1 (odd) from ARG0 down to 1."),
        tests=(((1,), 0), ((2,), 1), ((3,), 7), ((6,), 8), ((7,), 16), ((27,), 111)),
        bodies=("""
steps = 0
while ARG0 != 1:
    ARG0 = ARG0 // 2 if ARG0 % 2 == 0 else 3 * ARG0 + 1
    steps += 1
return steps
""", """
if ARG0 == 1:
    return 0
if ARG0 % 2 == 0:
    return 1 + FN(ARG0 // 2)
return 1 + FN(3 * ARG0 + 1)
""")),
    Family("digital_root", names=("digital_root", "repeated_digit_sum", "digit_root", "reduce_to_single_digit"),
        params=(("n",), ("num",), ("number",)), hints=("int", "int"), topic="numbers",
        docs=("Sum the digits of ARG0 repeatedly until a single digit remains.",
              "Return the digital root of the non-negative integer ARG0."),
        tests=(((0,), 0), ((5,), 5), ((16,), 7), ((942,), 6), ((493193,), 2)),
        bodies=("""
while ARG0 >= 10:
    ARG0 = sum(int(c) for c in str(ARG0))
return ARG0
""", """return 0 if ARG0 == 0 else 1 + (ARG0 - 1) % 9""", """
if ARG0 < 10:
    return ARG0
return FN(sum(int(c) for c in str(ARG0)))
""")),
    Family("triangular_number", names=("triangular_number", "nth_triangular", "triangle_number", "get_triangular"),
        params=(("n",), ("k",), ("index",)), hints=("int", "int"), topic="numbers",
        docs=("Return the ARG0-th triangular number.", "Return how many dots form a triangle with ARG0 rows."),
        tests=(((0,), 0), ((1,), 1), ((4,), 10), ((7,), 28), ((20,), 210)),
        bodies=("""return ARG0 * (ARG0 + 1) // 2""", """return sum(range(ARG0 + 1))""", """
if ARG0 == 0:
    return 0
return ARG0 + FN(ARG0 - 1)
""")),
    Family("divisors", names=("divisors", "list_divisors", "get_divisors", "all_divisors"),
        params=(("n",), ("num",), ("x",)), hints=("int", "list[int]"), topic="numbers",
        docs=("Return the positive divisors of ARG0 in increasing order.", "List every number that divides ARG0 evenly."),
        tests=(((1,), [1]), ((7,), [1, 7]), ((12,), [1, 2, 3, 4, 6, 12]), ((16,), [1, 2, 4, 8, 16]),
               ((28,), [1, 2, 4, 7, 14, 28])),
        bodies=("""return [d for d in range(1, ARG0 + 1) if ARG0 % d == 0]""", """
result = []
for d in range(1, ARG0 + 1):
    if ARG0 % d == 0:
        result.append(d)
return result
""", """
small, large = [], []
d = 1
while d * d <= ARG0:
    if ARG0 % d == 0:
        small.append(d)
        if d * d != ARG0:
            large.append(ARG0 // d)
    d += 1
return small + large[::-1]
""")),
    Family("count_divisors", names=("count_divisors", "num_divisors", "divisor_count", "number_of_divisors"),
        params=(("n",), ("num",), ("x",)), hints=("int", "int"), topic="numbers",
        docs=("Return how many positive divisors ARG0 has.", "Count the numbers that divide ARG0 evenly."),
        tests=(((1,), 1), ((7,), 2), ((12,), 6), ((16,), 5), ((36,), 9)),
        bodies=("""return len([d for d in range(1, ARG0 + 1) if ARG0 % d == 0])""",
                """return sum(1 for d in range(1, ARG0 + 1) if ARG0 % d == 0)""", """
count = 0
d = 1
while d * d <= ARG0:
    if ARG0 % d == 0:
        count += 1 if d * d == ARG0 else 2
    d += 1
return count
""")),
    Family("prime_factors", names=("prime_factors", "factorize", "prime_factorization", "get_prime_factors"),
        params=(("n",), ("num",), ("x",)), hints=("int", "list[int]"), topic="numbers",
        docs=("Return the prime factors of ARG0 in increasing order, with repetition.",
              "Factor ARG0 into primes, e.g. 12 -> [2, 2, 3]."),
        tests=(((1,), []), ((2,), [2]), ((12,), [2, 2, 3]), ((97,), [97]), ((360,), [2, 2, 2, 3, 3, 5]),
               ((100,), [2, 2, 5, 5])),
        bodies=("""
factors = []
d = 2
while d * d <= ARG0:
    while ARG0 % d == 0:
        factors.append(d)
        ARG0 //= d
    d += 1
if ARG0 > 1:
    factors.append(ARG0)
return factors
""", """
if ARG0 < 2:
    return []
for d in range(2, ARG0 + 1):
    if ARG0 % d == 0:
        return [d] + FN(ARG0 // d)
""")),
    Family("is_armstrong", names=("is_armstrong", "is_armstrong_number", "is_narcissistic", "check_armstrong"),
        params=(("n",), ("num",), ("number",)), hints=("int", "bool"), topic="numbers",
        docs=("Return True if ARG0 equals the sum of its digits each raised to the number of digits.",
              "Check whether the non-negative integer ARG0 is an Armstrong (narcissistic) number."),
        tests=(((0,), True), ((1,), True), ((153,), True), ((370,), True), ((9474,), True), ((10,), False),
               ((100,), False)),
        bodies=("""
digits = str(ARG0)
return sum(int(d) ** len(digits) for d in digits) == ARG0
""", """
count = len(str(ARG0))
total, rest = 0, ARG0
while rest:
    total += (rest % 10) ** count
    rest //= 10
return total == ARG0
""")),
    Family("binomial", names=("binomial", "n_choose_k", "binomial_coefficient", "combinations_count"),
        params=(("n", "k"), ("n", "r"), ("total", "chosen")), hints=("int", "int", "int"), topic="numbers",
        docs=("Return the binomial coefficient C(ARG0, ARG1).", "Count the ways to choose ARG1 items out of ARG0.",
              "Return ARG0 choose ARG1, which is 0 when ARG1 > ARG0."),
        tests=(((5, 2), 10), ((0, 0), 1), ((10, 3), 120), ((6, 0), 1), ((4, 5), 0), ((6, 6), 1)),
        bodies=("""
import math
return math.comb(ARG0, ARG1)
""", """
if ARG1 < 0 or ARG1 > ARG0:
    return 0
result = 1
for i in range(1, ARG1 + 1):
    result = result * (ARG0 - ARG1 + i) // i
return result
""", """
if ARG1 < 0 or ARG1 > ARG0:
    return 0
if ARG1 == 0 or ARG1 == ARG0:
    return 1
return FN(ARG0 - 1, ARG1 - 1) + FN(ARG0 - 1, ARG1)
""")),
    Family("integer_sqrt", names=("integer_sqrt", "isqrt", "floor_sqrt", "int_square_root"),
        params=(("n",), ("num",), ("x",)), hints=("int", "int"), topic="numbers",
        docs=("Return the largest integer r with r * r <= ARG0.", "Compute the integer square root of ARG0 >= 0."),
        tests=(((0,), 0), ((1,), 1), ((15,), 3), ((16,), 4), ((99,), 9), ((10000,), 100)),
        bodies=("""
import math
return math.isqrt(ARG0)
""", """
root = 0
while (root + 1) * (root + 1) <= ARG0:
    root += 1
return root
""", """
low, high = 0, ARG0
while low < high:
    mid = (low + high + 1) // 2
    if mid * mid <= ARG0:
        low = mid
    else:
        high = mid - 1
return low
""")),
    Family("is_leap_year", names=("is_leap_year", "is_leap", "leap_year", "check_leap_year"),
        params=(("year",), ("y",), ("yr",)), hints=("int", "bool"), topic="numbers",
        docs=("Return True if ARG0 is a leap year in the Gregorian calendar.",
              "Check whether ARG0 is divisible by 4 but not by 100, unless it is divisible by 400."),
        tests=(((2000,), True), ((1900,), False), ((2024,), True), ((2023,), False), ((2100,), False), ((1600,), True)),
        bodies=("""return ARG0 % 4 == 0 and (ARG0 % 100 != 0 or ARG0 % 400 == 0)""", """
if ARG0 % 400 == 0:
    return True
if ARG0 % 100 == 0:
    return False
return ARG0 % 4 == 0
""", """
import calendar
return calendar.isleap(ARG0)
""")),
    Family("is_power_of_two", names=("is_power_of_two", "power_of_two", "is_pow2", "check_power_of_two"),
        params=(("n",), ("num",), ("x",)), hints=("int", "bool"), topic="numbers",
        docs=("Return True if ARG0 is a power of two (1, 2, 4, 8, ...).", "Check whether ARG0 equals 2**k for some k >= 0."),
        tests=(((0,), False), ((1,), True), ((2,), True), ((6,), False), ((64,), True), ((-8,), False), ((1024,), True)),
        bodies=("""return ARG0 > 0 and (ARG0 & (ARG0 - 1)) == 0""", """
if ARG0 < 1:
    return False
while ARG0 % 2 == 0:
    ARG0 //= 2
return ARG0 == 1
""", """
return ARG0 > 0 and bin(ARG0).count("1") == 1
""")),
    Family("product_of_digits", names=("product_of_digits", "digit_product", "multiply_digits", "product_digits"),
        params=(("n",), ("num",), ("number",)), hints=("int", "int"), topic="numbers",
        docs=("Return the product of the decimal digits of ARG0.", "Multiply together the digits of ARG0, ignoring its sign."),
        tests=(((0,), 0), ((7,), 7), ((234,), 24), ((105,), 0), ((-99,), 81)),
        bodies=("""
import math
return math.prod(int(c) for c in str(abs(ARG0)))
""", """
ARG0 = abs(ARG0)
product = ARG0 % 10
ARG0 //= 10
while ARG0:
    product *= ARG0 % 10
    ARG0 //= 10
return product
""")),
]
