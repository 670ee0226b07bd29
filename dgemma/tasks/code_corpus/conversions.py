"""Families of small conversion and formula functions: units, bases, roman numerals, geometry, money, grades."""
from .family import Family

FAMILIES = [
    Family("fizzbuzz", names=("fizzbuzz", "fizz_buzz", "fizzbuzz_list", "fizzbuzz_sequence"),
        params=(("n",), ("limit",), ("count",)), hints=("int", "list[str]"), topic="conversions",
        docs=("Return the FizzBuzz strings for the numbers 1 to ARG0.",
              "List 1..ARG0 as strings, with multiples of 3 as Fizz, of 5 as Buzz and of both as FizzBuzz."),
        tests=(((0,), []), ((1,), ["1"]), ((5,), ["1", "2", "Fizz", "4", "Buzz"]),
               ((15,), ["1", "2", "Fizz", "4", "Buzz", "Fizz", "7", "8", "Fizz", "Buzz", "11", "Fizz", "13", "14", "FizzBuzz"])),
        bodies=("""
result = []
for i in range(1, ARG0 + 1):
    word = str(i)
    if i % 15 == 0:
        word = "FizzBuzz"
    elif i % 3 == 0:
        word = "Fizz"
    elif i % 5 == 0:
        word = "Buzz"
    result.append(word)
return result
""", """return ["Fizz" * (i % 3 == 0) + "Buzz" * (i % 5 == 0) or str(i) for i in range(1, ARG0 + 1)]""", """
result = []
for i in range(1, ARG0 + 1):
    word = ("Fizz" if i % 3 == 0 else "") + ("Buzz" if i % 5 == 0 else "")
    result.append(word or str(i))
return result
""")),
    Family("fizzbuzz_word", names=("fizzbuzz_word", "fizzbuzz_of", "fizz_buzz_value", "fizzbuzz_single"),
        params=(("n",), ("num",), ("x",)), hints=("int", "str"), topic="conversions",
        docs=("Return 'Fizz', 'Buzz', 'FizzBuzz' or the number itself for ARG0.",
              "Return the FizzBuzz word for ARG0: Fizz for multiples of 3, Buzz for 5, FizzBuzz for both."),
        tests=(((3,), "Fizz"), ((5,), "Buzz"), ((15,), "FizzBuzz"), ((7,), "7"), ((30,), "FizzBuzz"), ((1,), "1")),
        bodies=("""
if ARG0 % 15 == 0:
    return "FizzBuzz"
if ARG0 % 3 == 0:
    return "Fizz"
if ARG0 % 5 == 0:
    return "Buzz"
return str(ARG0)
""", """
word = ""
if ARG0 % 3 == 0:
    word += "Fizz"
if ARG0 % 5 == 0:
    word += "Buzz"
return word or str(ARG0)
""", """return [str(ARG0), "Fizz", "Buzz", "FizzBuzz"][(ARG0 % 3 == 0) + 2 * (ARG0 % 5 == 0)]""")),
    Family("celsius_to_fahrenheit", names=("celsius_to_fahrenheit", "c_to_f", "to_fahrenheit", "celsius_to_f"),
        params=(("celsius",), ("c",), ("degrees",)), hints=("float", "float"), topic="conversions",
        docs=("Convert the Celsius temperature ARG0 to Fahrenheit.", "Return ARG0 (in degrees Celsius) in degrees Fahrenheit."),
        tests=(((0,), 32.0), ((100,), 212.0), ((-40,), -40.0), ((37,), 98.6), ((-17.5,), 0.5)),
        bodies=("""return ARG0 * 9 / 5 + 32""", """return ARG0 * 1.8 + 32""", """
fahrenheit = ARG0 * 9 / 5
return fahrenheit + 32
""")),
    Family("fahrenheit_to_celsius", names=("fahrenheit_to_celsius", "f_to_c", "to_celsius", "fahrenheit_to_c"),
        params=(("fahrenheit",), ("temp_f",), ("degrees",)), hints=("float", "float"), topic="conversions",
        docs=("Convert the Fahrenheit temperature ARG0 to Celsius.", "Return ARG0 (in degrees Fahrenheit) in degrees Celsius."),
        tests=(((32,), 0.0), ((212,), 100.0), ((-40,), -40.0), ((98.6,), 37.0), ((50,), 10.0), ((0,), -17.77777777777778)),
        bodies=("""return (ARG0 - 32) * 5 / 9""", """return (ARG0 - 32) / 1.8""", """
above_freezing = ARG0 - 32
return above_freezing * 5 / 9
""")),
    Family("celsius_to_kelvin", names=("celsius_to_kelvin", "c_to_k", "to_kelvin", "kelvin_from_celsius"),
        params=(("celsius",), ("c",), ("temp",)), hints=("float", "float"), topic="conversions",
        docs=("Convert the Celsius temperature ARG0 to kelvin.", "Return ARG0 (in degrees Celsius) as an absolute temperature in K."),
        tests=(((0,), 273.15), ((100,), 373.15), ((-273.15,), 0.0), ((25,), 298.15), ((-40,), 233.15)),
        bodies=("""return ARG0 + 273.15""", """
absolute_zero = -273.15
return ARG0 - absolute_zero
""")),
    Family("km_to_miles", names=("km_to_miles", "kilometers_to_miles", "kilometres_to_miles", "convert_km_to_miles"),
        params=(("km",), ("kilometers",), ("distance",)), hints=("float", "float"), topic="conversions",
        docs=("Convert a distance in kilometres (ARG0) to miles.", "Return the distance ARG0, given in km, in miles (1 mile = 1.609344 km)."),
        tests=(((0,), 0.0), ((1.609344,), 1.0), ((10,), 6.2137119223733395), ((42.195,), 26.218757456454306)),
        bodies=("""return ARG0 / 1.609344""", """return ARG0 * 0.621371192237334""", """
km_per_mile = 1.609344
return ARG0 / km_per_mile
""")),
    Family("miles_to_km", names=("miles_to_km", "miles_to_kilometers", "miles_to_kilometres", "convert_miles_to_km"),
        params=(("miles",), ("mi",), ("distance",)), hints=("float", "float"), topic="conversions",
        docs=("Convert a distance in miles (ARG0) to kilometres.", "Return the distance ARG0, given in miles, in kilometres."),
        tests=(((0,), 0.0), ((1,), 1.609344), ((10,), 16.09344), ((26.2,), 42.1648128), ((0.5,), 0.804672)),
        bodies=("""return ARG0 * 1.609344""", """
km_per_mile = 1.609344
return km_per_mile * ARG0
""")),
    Family("kg_to_pounds", names=("kg_to_pounds", "kilograms_to_pounds", "kg_to_lbs", "convert_kg_to_pounds"),
        params=(("kg",), ("kilograms",), ("mass",)), hints=("float", "float"), topic="conversions",
        docs=("Convert a mass in kilograms (ARG0) to pounds.", "Return the mass ARG0, given in kg, in pounds (1 lb = 0.45359237 kg)."),
        tests=(((0,), 0.0), ((1,), 2.2046226218487757), ((10,), 22.046226218487757), ((0.45359237,), 1.0),
               ((70,), 154.3235835294143)),
        bodies=("""return ARG0 / 0.45359237""", """
kg_per_pound = 0.45359237
return ARG0 / kg_per_pound
""")),
    Family("inches_to_cm", names=("inches_to_cm", "inches_to_centimeters", "in_to_cm", "convert_inches_to_cm"),
        params=(("inches",), ("length",), ("value",)), hints=("float", "float"), topic="conversions",
        docs=("Convert a length in inches (ARG0) to centimetres.", "Return the length ARG0, given in inches, in cm (1 inch = 2.54 cm)."),
        tests=(((0,), 0.0), ((1,), 2.54), ((12,), 30.48), ((2.5,), 6.35), ((-3,), -7.62)),
        bodies=("""return ARG0 * 2.54""", """
cm_per_inch = 2.54
return cm_per_inch * ARG0
""")),
    Family("minutes_to_hours", names=("minutes_to_hours", "split_minutes", "hours_and_minutes", "minutes_to_hm"),
        params=(("minutes",), ("total_minutes",), ("mins",)), hints=("int", "tuple[int, int]"), topic="conversions",
        docs=("Return (hours, minutes) for a duration given in minutes (ARG0).",
              "Split the minute count ARG0 into whole hours and the remaining minutes."),
        tests=(((0,), (0, 0)), ((59,), (0, 59)), ((60,), (1, 0)), ((135,), (2, 15)), ((1440,), (24, 0))),
        bodies=("""return divmod(ARG0, 60)""", """return ARG0 // 60, ARG0 % 60""", """
hours = 0
while ARG0 >= 60:
    ARG0 -= 60
    hours += 1
return (hours, ARG0)
""")),
    Family("seconds_to_hms", names=("seconds_to_hms", "format_duration", "seconds_to_clock", "format_seconds"),
        params=(("total_seconds",), ("secs",), ("duration",)), hints=("int", "str"), topic="conversions",
        docs=("Format a duration in seconds (ARG0) as an HH:MM:SS string.",
              "Return the number of seconds ARG0 as hours, minutes and seconds, e.g. 01:01:01."),
        tests=(((0,), "00:00:00"), ((59,), "00:00:59"), ((3661,), "01:01:01"), ((86399,), "23:59:59"),
               ((90000,), "25:00:00")),
        bodies=("""
hours, rest = divmod(ARG0, 3600)
minutes, seconds = divmod(rest, 60)
return f"{hours:02d}:{minutes:02d}:{seconds:02d}"
""", """
hours = ARG0 // 3600
minutes = ARG0 % 3600 // 60
seconds = ARG0 % 60
return "%02d:%02d:%02d" % (hours, minutes, seconds)
""", """return ":".join(str(part).zfill(2) for part in (ARG0 // 3600, ARG0 // 60 % 60, ARG0 % 60))""")),
    Family("decimal_to_binary", names=("decimal_to_binary", "to_binary", "int_to_binary", "binary_string"),
        params=(("n",), ("num",), ("value",)), hints=("int", "str"), topic="conversions",
        docs=("Return the binary representation of the non-negative integer ARG0, without a prefix.",
              "Convert ARG0 to a string of 0s and 1s."),
        tests=(((0,), "0"), ((1,), "1"), ((5,), "101"), ((10,), "1010"), ((255,), "11111111")),
        bodies=("""return bin(ARG0)[2:]""", """return format(ARG0, "b")""", """
if ARG0 == 0:
    return "0"
digits = ""
while ARG0 > 0:
    digits = str(ARG0 % 2) + digits
    ARG0 //= 2
return digits
""", """
if ARG0 < 2:
    return str(ARG0)
return FN(ARG0 // 2) + str(ARG0 % 2)
""")),
    Family("binary_to_int", names=("binary_to_int", "binary_to_decimal", "parse_binary", "from_binary"),
        params=(("bits",), ("binary",), ("s",)), hints=("str", "int"), topic="conversions",
        docs=("Return the integer value of the binary string ARG0.", "Convert a string of 0s and 1s to a number."),
        tests=((("0",), 0), (("1",), 1), (("101",), 5), (("1010",), 10), (("11111111",), 255), (("0011",), 3)),
        bodies=("""return int(ARG0, 2)""", """
value = 0
for bit in ARG0:
    value = value * 2 + int(bit)
return value
""", """return sum(int(bit) * 2 ** i for i, bit in enumerate(reversed(ARG0)))""")),
    Family("decimal_to_hex", names=("decimal_to_hex", "to_hex", "int_to_hex", "hex_string"),
        params=(("n",), ("num",), ("value",)), hints=("int", "str"), topic="conversions",
        docs=("Return the upper-case hexadecimal representation of ARG0 >= 0, without a prefix.",
              "Convert ARG0 to a base-16 string such as 'FF'."),
        tests=(((0,), "0"), ((10,), "A"), ((16,), "10"), ((255,), "FF"), ((4095,), "FFF"), ((48879,), "BEEF")),
        bodies=("""return format(ARG0, "X")""", """return hex(ARG0)[2:].upper()""", """
digits = "0123456789ABCDEF"
result = digits[ARG0 % 16]
ARG0 //= 16
while ARG0 > 0:
    result = digits[ARG0 % 16] + result
    ARG0 //= 16
return result
""", """
if ARG0 < 16:
    return "0123456789ABCDEF"[ARG0]
return FN(ARG0 // 16) + "0123456789ABCDEF"[ARG0 % 16]
""")),
    Family("int_to_roman", names=("int_to_roman", "to_roman", "roman_numeral", "integer_to_roman"),
        params=(("n",), ("num",), ("number",)), hints=("int", "str"), topic="conversions",
        docs=("Return the Roman numeral for ARG0, where 1 <= ARG0 <= 3999.", "Convert the integer ARG0 to Roman numerals."),
        tests=(((1,), "I"), ((4,), "IV"), ((9,), "IX"), ((58,), "LVIII"), ((1994,), "MCMXCIV"), ((3999,), "MMMCMXCIX")),
        bodies=("""
pairs = [(1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"),
         (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")]
result = ""
for value, symbol in pairs:
    while ARG0 >= value:
        result += symbol
        ARG0 -= value
return result
""", """
values = [1000, 900, 500, 400, 100, 90, 50, 40, 10, 9, 5, 4, 1]
symbols = ["M", "CM", "D", "CD", "C", "XC", "L", "XL", "X", "IX", "V", "IV", "I"]
result = []
for value, symbol in zip(values, symbols):
    count, ARG0 = divmod(ARG0, value)
    result.append(symbol * count)
return "".join(result)
""", """
thousands = ["", "M", "MM", "MMM"]
hundreds = ["", "C", "CC", "CCC", "CD", "D", "DC", "DCC", "DCCC", "CM"]
tens = ["", "X", "XX", "XXX", "XL", "L", "LX", "LXX", "LXXX", "XC"]
ones = ["", "I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX"]
return thousands[ARG0 // 1000] + hundreds[ARG0 // 100 % 10] + tens[ARG0 // 10 % 10] + ones[ARG0 % 10]
""")),
    Family("roman_to_int", names=("roman_to_int", "from_roman", "parse_roman", "roman_to_integer"),
        params=(("s",), ("roman",), ("numeral",)), hints=("str", "int"), topic="conversions",
        docs=("Return the integer value of the Roman numeral ARG0.", "Convert a Roman numeral string such as 'XIV' to a number."),
        tests=((("",), 0), (("I",), 1), (("IV",), 4), (("IX",), 9), (("LVIII",), 58), (("MCMXCIV",), 1994),
               (("MMMCMXCIX",), 3999)),
        bodies=("""
values = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}
total = 0
for i, ch in enumerate(ARG0):
    if i + 1 < len(ARG0) and values[ch] < values[ARG0[i + 1]]:
        total -= values[ch]
    else:
        total += values[ch]
return total
""", """
values = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}
total, previous = 0, 0
for ch in reversed(ARG0):
    value = values[ch]
    total += value if value >= previous else -value
    previous = value
return total
""", """
for pair, digits in (("CM", "DCCCC"), ("CD", "CCCC"), ("XC", "LXXXX"), ("XL", "XXXX"), ("IX", "VIIII"), ("IV", "IIII")):
    ARG0 = ARG0.replace(pair, digits)
values = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}
return sum(values[ch] for ch in ARG0)
""")),
    Family("circle_area", names=("circle_area", "area_of_circle", "circle_area_from_radius", "disk_area"),
        params=(("radius",), ("r",)), hints=("float", "float"), topic="conversions",
        docs=("Return the area of a circle whose radius is ARG0.", "Compute pi * ARG0 ** 2."),
        tests=(((0,), 0.0), ((1,), 3.141592653589793), ((2,), 12.566370614359172), ((0.5,), 0.7853981633974483),
               ((10,), 314.1592653589793)),
        bodies=("""
import math
return math.pi * ARG0 ** 2
""", """
import math
return math.pi * ARG0 * ARG0
""")),
    Family("rectangle_area", names=("rectangle_area", "area_of_rectangle", "rect_area", "rectangle_area_of"),
        params=(("width", "height"), ("length", "width"), ("w", "h")), hints=("float", "float", "float"),
        topic="conversions",
        docs=("Return the area of a ARG0 by ARG1 rectangle.", "Compute the area of a rectangle from its two side lengths."),
        tests=(((3, 4), 12), ((0, 5), 0), ((2.5, 4), 10.0), ((7, 7), 49), ((1.5, 0.5), 0.75)),
        bodies=("""return ARG0 * ARG1""", """
import math
return math.prod((ARG0, ARG1))
""", """
if ARG0 <= 0 or ARG1 <= 0:
    return 0
return ARG0 * ARG1
""")),
    Family("triangle_area", names=("triangle_area", "area_of_triangle", "triangle_area_base_height", "tri_area"),
        params=(("base", "height"), ("b", "h")), hints=("float", "float", "float"), topic="conversions",
        docs=("Return the area of a triangle with base ARG0 and height ARG1.", "Compute one half of ARG0 times ARG1."),
        tests=(((10, 5), 25.0), ((3, 4), 6.0), ((0, 7), 0.0), ((2.5, 2), 2.5), ((1, 1), 0.5)),
        bodies=("""return 0.5 * ARG0 * ARG1""", """return ARG0 * ARG1 / 2""", """
rectangle = ARG0 * ARG1
return rectangle / 2
""")),
    Family("hypotenuse", names=("hypotenuse", "hypot_length", "right_triangle_hypotenuse", "pythagoras"),
        params=(("a", "b"), ("x", "y"), ("leg1", "leg2")), hints=("float", "float", "float"), topic="conversions",
        docs=("Return the hypotenuse of a right triangle with legs ARG0 and ARG1.",
              "Compute sqrt(ARG0 ** 2 + ARG1 ** 2)."),
        tests=(((3, 4), 5.0), ((5, 12), 13.0), ((0, 0), 0.0), ((1, 1), 1.4142135623730951), ((2, 3), 3.605551275463989)),
        bodies=("""
import math
return math.hypot(ARG0, ARG1)
""", """
import math
return math.sqrt(ARG0 * ARG0 + ARG1 * ARG1)
""", """return (ARG0 ** 2 + ARG1 ** 2) ** 0.5""")),
    Family("distance", names=("distance_2d", "point_distance", "euclidean_distance", "distance_between_points"),
        params=(("x1", "y1", "x2", "y2"), ("ax", "ay", "bx", "by")), hints=("float", "float", "float", "float", "float"),
        topic="conversions",
        docs=("Return the distance between the points (ARG0, ARG1) and (ARG2, ARG3).",
              "Compute the Euclidean distance between two points in the plane."),
        tests=(((0, 0, 3, 4), 5.0), ((1, 1, 1, 1), 0.0), ((-1, -1, 2, 3), 5.0), ((0, 0, 1, 1), 1.4142135623730951)),
        bodies=("""
import math
return math.dist((ARG0, ARG1), (ARG2, ARG3))
""", """
import math
return math.hypot(ARG2 - ARG0, ARG3 - ARG1)
""", """
dx = ARG2 - ARG0
dy = ARG3 - ARG1
return (dx * dx + dy * dy) ** 0.5
""")),
    Family("average_of_two", names=("average_of_two", "mean_of_two", "midpoint_value", "average_two"),
        params=(("a", "b"), ("x", "y"), ("first", "second")), hints=("float", "float", "float"), topic="conversions",
        docs=("Return the average of ARG0 and ARG1.", "Return the arithmetic mean of two numbers."),
        tests=(((2, 4), 3.0), ((1, 2), 1.5), ((-3, 3), 0.0), ((0, 0), 0.0), ((2.5, 3.5), 3.0)),
        bodies=("""return (ARG0 + ARG1) / 2""", """return sum((ARG0, ARG1)) / 2""", """return ARG0 + (ARG1 - ARG0) / 2""")),
    Family("percentage", names=("percentage", "percent_of", "to_percentage", "percentage_of_total"),
        params=(("part", "whole"), ("value", "total"), ("count", "out_of")), hints=("float", "float", "float"),
        topic="conversions",
        docs=("Return what percentage ARG0 is of ARG1, or 0.0 when ARG1 is 0.", "Compute ARG0 / ARG1 * 100."),
        tests=(((50, 200), 25.0), ((1, 4), 25.0), ((3, 3), 100.0), ((0, 10), 0.0), ((5, 0), 0.0), ((1, 3), 33.333333333333336)),
        bodies=("""
if ARG1 == 0:
    return 0.0
return ARG0 / ARG1 * 100
""", """return 100 * ARG0 / ARG1 if ARG1 else 0.0""")),
    Family("simple_interest", names=("simple_interest", "compute_simple_interest", "interest_simple", "flat_interest"),
        params=(("principal", "rate", "years"), ("p", "r", "t")), hints=("float", "float", "float", "float"),
        topic="conversions",
        docs=("Return the simple interest on principal ARG0 at a yearly rate of ARG1 percent over ARG2 years.",
              "Compute ARG0 * ARG1 * ARG2 / 100."),
        tests=(((1000, 5, 2), 100.0), ((0, 5, 10), 0.0), ((1500, 4.5, 3), 202.5), ((200, 0, 5), 0.0), ((100, 10, 1), 10.0)),
        bodies=("""return ARG0 * ARG1 * ARG2 / 100""", """
per_year = ARG0 * ARG1 / 100
return per_year * ARG2
""")),
    Family("compound_interest", names=("compound_interest", "compound_amount", "future_value", "grow_with_interest"),
        params=(("principal", "rate", "years"), ("p", "r", "n")), hints=("float", "float", "int", "float"),
        topic="conversions",
        docs=("Return the balance after investing ARG0 at ARG1 percent a year, compounded yearly, over ARG2 years.",
              "Compute ARG0 * (1 + ARG1 / 100) ** ARG2."),
        tests=(((1000, 10, 2), 1210.0), ((1000, 0, 5), 1000.0), ((500, 5, 0), 500.0), ((100, 50, 3), 337.5),
               ((2000, 5, 3), 2315.25)),
        bodies=("""return ARG0 * (1 + ARG1 / 100) ** ARG2""", """
amount = ARG0
for _ in range(ARG2):
    amount *= 1 + ARG1 / 100
return amount
""", """
if ARG2 == 0:
    return ARG0
return FN(ARG0, ARG1, ARG2 - 1) * (1 + ARG1 / 100)
""")),
    Family("bmi", names=("bmi", "body_mass_index", "compute_bmi", "calculate_bmi"),
        params=(("weight", "height"), ("weight_kg", "height_m"), ("kg", "meters")), hints=("float", "float", "float"),
        topic="conversions",
        docs=("Return the body mass index from a weight in kg (ARG0) and a height in metres (ARG1).", "Compute ARG0 / ARG1 ** 2."),
        tests=(((70, 1.75), 22.857142857142858), ((90, 2), 22.5), ((50, 1), 50.0), ((0, 1.8), 0.0), ((55, 1.6), 21.484375)),
        bodies=("""return ARG0 / ARG1 ** 2""", """return ARG0 / (ARG1 * ARG1)""", """
squared = ARG1 ** 2
return ARG0 / squared
""")),
    Family("grade_letter", names=("grade_letter", "letter_grade", "score_to_grade", "get_grade"),
        params=(("score",), ("marks",), ("points",)), hints=("int", "str"), topic="conversions",
        docs=("Return the letter grade for a score ARG0 from 0 to 100: A >= 90, B >= 80, C >= 70, D >= 60, else F.",
              "Convert the numeric score ARG0 to a letter A, B, C, D or F."),
        tests=(((95,), "A"), ((90,), "A"), ((85,), "B"), ((72,), "C"), ((60,), "D"), ((59,), "F"), ((0,), "F")),
        bodies=("""
if ARG0 >= 90:
    return "A"
if ARG0 >= 80:
    return "B"
if ARG0 >= 70:
    return "C"
if ARG0 >= 60:
    return "D"
return "F"
""", """
for cutoff, letter in ((90, "A"), (80, "B"), (70, "C"), (60, "D")):
    if ARG0 >= cutoff:
        return letter
return "F"
""", """return "FFFFFFDCBAA"[min(ARG0, 100) // 10]""")),
    Family("is_triangle", names=("is_triangle", "is_valid_triangle", "can_form_triangle", "triangle_possible"),
        params=(("a", "b", "c"), ("x", "y", "z"), ("side1", "side2", "side3")), hints=("float", "float", "float", "bool"),
        topic="conversions",
        docs=("Return True if sides ARG0, ARG1 and ARG2 can form a triangle.",
              "Check the triangle inequality: each side shorter than the sum of the other two."),
        tests=(((3, 4, 5), True), ((1, 1, 3), False), ((1, 2, 3), False), ((0, 0, 0), False), ((5, 5, 5), True),
               ((7, 10, 5), True)),
        bodies=("""return ARG0 + ARG1 > ARG2 and ARG0 + ARG2 > ARG1 and ARG1 + ARG2 > ARG0""", """
shortest, middle, longest = sorted((ARG0, ARG1, ARG2))
return shortest > 0 and shortest + middle > longest
""", """
sides = sorted([ARG0, ARG1, ARG2])
return sides[0] + sides[1] > sides[2]
""")),
    Family("discriminant", names=("discriminant", "quadratic_discriminant", "compute_discriminant", "discriminant_of"),
        params=(("a", "b", "c"), ("x2_coeff", "x_coeff", "constant")), hints=("float", "float", "float", "float"),
        topic="conversions",
        docs=("Return the discriminant ARG1 ** 2 - 4 * ARG0 * ARG2 of a quadratic.",
              "Compute the discriminant of ARG0 * x ** 2 + ARG1 * x + ARG2."),
        tests=(((1, 2, 1), 0), ((1, 0, -4), 16), ((1, 1, 1), -3), ((2, 5, 3), 1), ((0, 3, 7), 9)),
        bodies=("""return ARG1 ** 2 - 4 * ARG0 * ARG2""", """return ARG1 * ARG1 - 4 * ARG0 * ARG2""")),
    Family("classify_temperature", names=("classify_temperature", "describe_temperature", "temperature_label",
                                          "weather_feel"),
        params=(("celsius",), ("temp",), ("degrees",)), hints=("float", "str"), topic="conversions",
        docs=("Return 'freezing' at or below 0 C, 'cold' below 15, 'warm' below 30, otherwise 'hot'.",
              "Describe the Celsius temperature ARG0 as freezing, cold, warm or hot."),
        tests=(((-5,), "freezing"), ((0,), "freezing"), ((10,), "cold"), ((15,), "warm"), ((29,), "warm"), ((30,), "hot"),
               ((35,), "hot")),
        bodies=("""
if ARG0 <= 0:
    return "freezing"
if ARG0 < 15:
    return "cold"
if ARG0 < 30:
    return "warm"
return "hot"
""", """
for limit, label in ((15, "cold"), (30, "warm")):
    if 0 < ARG0 < limit:
        return label
return "freezing" if ARG0 <= 0 else "hot"
""", """
if ARG0 > 0:
    return "cold" if ARG0 < 15 else "warm" if ARG0 < 30 else "hot"
return "freezing"
""")),
    Family("dollars_to_cents", names=("dollars_to_cents", "to_cents", "amount_in_cents", "price_in_cents"),
        params=(("amount",), ("dollars",), ("price",)), hints=("float", "int"), topic="conversions",
        docs=("Convert a dollar amount (ARG0) to a whole number of cents.", "Return the price in dollars ARG0 as a rounded number of cents."),
        tests=(((1.0,), 100), ((0.0,), 0), ((19.99,), 1999), ((0.1,), 10), ((2.5,), 250), ((0.07,), 7)),
        bodies=("""return round(ARG0 * 100)""", """return int(round(ARG0 * 100))""",
                """return int(f"{ARG0:.2f}".replace(".", ""))""")),
]
