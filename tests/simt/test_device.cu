// kernels/device.cu under the SIMT emulator: the device queries answer and the iota kernel runs.
#include <stdio.h>
#include <string.h>

#include "ccomp_cuda.h"
#include "simt_test.h"

int main()
{
    int count = -1;
    char msg[256] = "";
    CHECK(ccomp_cuda_device_count(&count, msg, sizeof msg) == 0 && count == 1);
    char name[256];
    int major = 0, minor = 0;
    CHECK(ccomp_cuda_device_name(0, name, sizeof name, &major, &minor) == 0);
    CHECK(strstr(name, "SIMT") != NULL && major == 9 && minor == 0);
    CHECK(ccomp_cuda_device_name(1, name, sizeof name, &major, &minor) != 0); // one device only

    for (const char *order : kOrders) {
        CHECK(ccomp_simt_set_schedule(order) == 0);
        for (int n : {1, 255, 256, 257, 1000}) {
            int out[1000];
            memset(out, 0xff, sizeof out);
            const unsigned long long before = ccomp_simt_launch_count();
            CHECK(ccomp_cuda_iota(out, n, 3, msg, sizeof msg) == 0);
            CHECK(ccomp_simt_launch_count() == before + 1);
            for (int i = 0; i < n; i++) CHECK_EQ(out[i], i * 3);
            CHECK_EQ(out[n < 1000 ? n : 999], n < 1000 ? -1 : 999 * 3); // nothing written past n
        }
    }
    CHECK(ccomp_cuda_iota(NULL, 0, 1, msg, sizeof msg) == -1 && strstr(msg, "positive") != NULL);
    return simt_test_done("test_device");
}
